"""The contracts' default parameters as the Python parties and the CLI name them: a module of
its own, free of web3, so that `opmlc` commands that never touch a chain start fast."""

DEFAULT_BOND = 10**17  # 0.1 ether, the contract's DEFAULT_BOND: each side's stake in one game
DEFAULT_WINDOW = 3600
DEFAULT_CLOCK = 7200
DEFAULT_BACKED_GAMES = 4  # the contract's DEFAULT_BACKED_GAMES: stakes a result carries
