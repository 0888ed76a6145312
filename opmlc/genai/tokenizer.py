"""The model folder's tokenizer (tokenizer.json), read with the `tokenizers` library: an
optional run-time dependency of `opmlc generate` (pip install 'opmlc[llm]')."""

from __future__ import annotations

from pathlib import Path

from opmlc.errors import OpmlcError

INSTALL = "pip install 'opmlc[llm]'"


class Tokenizer:
    def __init__(self, folder: str | Path) -> None:
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError:
            raise OpmlcError(f"generating text needs the tokenizers package: {INSTALL}") from None
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise OpmlcError(f"{path}: no tokenizer; the build's model folder must keep its tokenizer.json")
        try:
            self._tok = HFTokenizer.from_file(str(path))
        except Exception as exc:  # the library raises its own exception types for a bad file
            raise OpmlcError(f"{path}: not a tokenizer the tokenizers library reads ({str(exc).splitlines()[0][:120]})") from None

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)


def load_tokenizer(folder: str | Path) -> Tokenizer:
    return Tokenizer(folder)
