// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ModelCommitment, Commitments} from "./Commitments.sol";
import {DisputeGame} from "./DisputeGame.sol";
import {ListProof} from "./ListProof.sol";
import {MIPS} from "./MIPS.sol";

/// @title TaskRegistry
/// @notice The entry point of opmlc on chain (docs/DESIGN.md, "The dispute protocol"): models are
///         registered by their commitment, requesters ask for inference on input roots, a server
///         posts a result backed by `backedGames` stakes, and anyone who computes another result
///         challenges it with one stake within the window, which starts a DisputeGame against
///         the server.
///
///         Every game holds one stake from each side: the challenger's, sent with `challenge`,
///         and the server's, taken at that moment from the result's backing. Its winner is
///         credited both, and nothing else: no game can take another game's stakes, so a
///         challenger that wins its game is paid whatever colluding, losing or racing
///         challengers do in theirs. Games run side by side; while every backed stake is in a
///         game, `challenge` reverts and the window is paused (its time left is restored when a
///         server win frees a stake), so colluders that fill the games and lose cannot run out
///         the clock on a wrong result. A result is final once the window has passed and no game
///         is open; `finalize` then returns the backing. docs/DESIGN.md, "Stakes", argues it.
/// @dev Stakes are paid by credit (`credit`, `withdraw`): a game's end or a finalize never sends
///      ether, so no recipient can block them.
contract TaskRegistry is DisputeGame {
    /// @notice A task's life: None 0, Requested 1, Submitted 2 (a result awaits the window's
    ///         end), Rejected 3 (a challenger won), Finalized 4 (the result stands).
    enum TaskStatus {
        None,
        Requested,
        Submitted,
        Rejected,
        Finalized
    }

    /// @notice Everything about one task (`getTask`).
    /// @dev `trace0` is trace state 0 (the template with the input roots); `deadline` the last
    ///      second a challenge is accepted, not counting a pause in progress; `pausedAt` the
    ///      second the window was paused (every backed stake in a game), 0 when it runs;
    ///      `backing` the server's stakes not in a game (credited back to the server once the
    ///      result is rejected or final).
    struct Task {
        bytes32 modelId;
        bytes32 trace0;
        bytes32 outputRoot;
        bytes32 finalTrace;
        address requester;
        TaskStatus status;
        uint32 openGames;
        uint64 deadline;
        address server;
        uint256 backing;
        uint64 pausedAt;
    }

    /// @notice A sensible stake for each side of a game.
    uint256 public constant DEFAULT_BOND = 0.1 ether;
    /// @notice A sensible number of games a result's backing pays for at once.
    uint32 public constant DEFAULT_BACKED_GAMES = 4;
    /// @notice Stakes in one game: the challenger's and the server's.
    uint256 public constant GAME_STAKES = 2;
    /// @notice A sensible challenge window: recomputing a result natively takes seconds.
    uint64 public constant DEFAULT_CHALLENGE_WINDOW = 1 hours;

    /// @notice Each side's stake in one game: what a challenge carries (exactly), and the unit
    ///         of a result's backing.
    uint256 public immutable bondAmount;
    /// @notice The stakes a result carries (exactly `bondAmount × backedGames`): how many games
    ///         can be open on it at once.
    uint32 public immutable backedGames;
    /// @notice Seconds after a result is submitted during which it can be challenged.
    uint64 public immutable challengeWindow;

    mapping(bytes32 => ModelCommitment) internal _models;
    Task[] internal _tasks;
    /// @notice Ether each account can withdraw: stakes won or returned.
    mapping(address => uint256) public credit;

    /// @notice A model was registered under `modelId` = keccak256(abi.encode(commitment)).
    event ModelRegistered(bytes32 indexed modelId, ModelCommitment commitment);
    /// @notice Inference on `inputRoots` was requested; `trace0` is its trace state 0.
    event InferenceRequested(
        uint256 indexed taskId, bytes32 indexed modelId, address indexed requester, bytes32[] inputRoots, bytes32 trace0
    );
    /// @notice A result was posted with `backedGames` stakes; it can be challenged until
    ///         `deadline` (inclusive), plus any time the window spends paused.
    event ResultSubmitted(
        uint256 indexed taskId, address indexed server, bytes32 outputRoot, bytes32 finalTrace, uint64 deadline
    );
    /// @notice A challenger disputed the result with its own output and final trace: game `gameId`.
    event Challenged(
        uint256 indexed taskId, uint256 indexed gameId, address indexed challenger, bytes32 outputRoot, bytes32 finalTrace
    );
    /// @notice Every backed stake of the result is in a game: challenges wait, the window stops.
    event ChallengeWindowPaused(uint256 indexed taskId);
    /// @notice A server win freed a stake: the window runs again, now until `deadline`.
    event ChallengeWindowResumed(uint256 indexed taskId, uint64 deadline);
    /// @notice A challenger won game `gameId`: the result does not stand.
    event ResultRejected(uint256 indexed taskId, uint256 indexed gameId);
    /// @notice The window passed with no game open: the result stands.
    event ResultFinalized(uint256 indexed taskId, bytes32 outputRoot);
    /// @notice `amount` was added to `account`'s credit.
    event Credited(address indexed account, uint256 amount);
    /// @notice `account` withdrew its credit.
    event Withdrawn(address indexed account, uint256 amount);

    /// @notice The commitment breaks the trace's numbering: nNodes = 0, nInputs > firstNodeValue,
    ///         firstNodeValue + nNodes > nValues, outputValue ≥ nValues or log2StepBudget > MAX_LOG2_STEPS.
    error InvalidModelCommitment();
    /// @notice No model is registered under this id.
    error UnknownModel(bytes32 modelId);
    /// @notice No task has this id.
    error UnknownTask(uint256 taskId);
    /// @notice requestInference: `got` input roots or proofs for a model of `expected` inputs.
    error InputRootCountMismatch(uint256 expected, uint256 got);
    /// @notice requestInference: input `index`'s proof does not show a zero leaf at position
    ///         `index` of the trace built so far.
    error InvalidInputProof(uint256 index);
    /// @notice submitResult on a task that already has a result.
    error ResultAlreadySubmitted(TaskStatus status);
    /// @notice challenge or finalize on a task with no result awaiting its window's end.
    error NoOpenResult(TaskStatus status);
    /// @notice challenge: the ether sent is not one stake (`bondAmount`).
    error WrongBond(uint256 sent, uint256 required);
    /// @notice submitResult: the ether sent is not the backing (`bondAmount × backedGames`).
    error WrongBacking(uint256 sent, uint256 required);
    /// @notice challenge while all `open` backed games are running: wait until one ends (the
    ///         window is paused meanwhile).
    error NoBackingLeft(uint256 open);
    /// @notice `outputProof` does not show `outputRoot` at position outputValue of `finalTrace`.
    error InvalidOutputProof();
    /// @notice A challenge with the server's own final trace disputes nothing.
    error SameFinalTrace();
    /// @notice challenge after the window (`deadline` passed).
    error ChallengeWindowClosed(uint64 deadline);
    /// @notice finalize before the window's end.
    error ChallengeWindowOpen(uint64 deadline);
    /// @notice finalize while `open` games on the result are not over.
    error GamesPending(uint256 open);
    /// @notice withdraw with no credit.
    error NothingToWithdraw();
    /// @notice The withdrawal's transfer failed.
    error WithdrawFailed();
    /// @notice A challenge window of 0 seconds.
    error InvalidChallengeWindow();
    /// @notice A result backing 0 games.
    error InvalidBackedGames();

    /// @param mips_ The deployed MIPS single-step verifier.
    /// @param bondAmount_ Each side's stake in a game (DEFAULT_BOND is sensible).
    /// @param challengeWindow_ Seconds to challenge a result (> 0; DEFAULT_CHALLENGE_WINDOW).
    /// @param clockSeconds_ Each party's clock in a game (> 0; DEFAULT_CLOCK_SECONDS).
    /// @param backedGames_ Stakes a result carries (> 0; DEFAULT_BACKED_GAMES).
    constructor(MIPS mips_, uint256 bondAmount_, uint64 challengeWindow_, uint64 clockSeconds_, uint32 backedGames_)
        DisputeGame(mips_, clockSeconds_)
    {
        if (challengeWindow_ == 0) revert InvalidChallengeWindow();
        if (backedGames_ == 0) revert InvalidBackedGames();
        bondAmount = bondAmount_;
        challengeWindow = challengeWindow_;
        backedGames = backedGames_;
    }

    // ---------------------------------------------------------------------------------------
    // Models and tasks
    // ---------------------------------------------------------------------------------------

    /// @notice Registers a model commitment; registering it again changes nothing.
    /// @param commitment The model's commitment (docs/DESIGN.md, "The model commitment").
    /// @return modelId keccak256(abi.encode(commitment)).
    function registerModel(ModelCommitment calldata commitment) external returns (bytes32 modelId) {
        if (
            commitment.nNodes == 0 || commitment.nInputs > commitment.firstNodeValue
                || uint256(commitment.firstNodeValue) + commitment.nNodes > commitment.nValues
                || commitment.outputValue >= commitment.nValues || commitment.log2StepBudget > MAX_LOG2_STEPS
        ) revert InvalidModelCommitment();
        modelId = Commitments.modelId(commitment);
        if (_models[modelId].nNodes != 0) return modelId;
        _models[modelId] = commitment;
        emit ModelRegistered(modelId, commitment);
    }

    /// @notice Requests inference of model `modelId` on `inputRoots`; derives trace state 0.
    /// @dev From `traceTemplate`, input i's zero leaf at position i is replaced by inputRoots[i],
    ///      each proof taken against the root after the previous replacement.
    /// @param modelId A registered model.
    /// @param inputRoots The tensor roots of the graph inputs, in order.
    /// @param inputProofs For each input i, the list proof of position i (nValues leaves).
    /// @return taskId The new task's id (0, 1, ...).
    function requestInference(bytes32 modelId, bytes32[] calldata inputRoots, bytes32[][] calldata inputProofs)
        external
        returns (uint256 taskId)
    {
        ModelCommitment storage model = _model(modelId);
        uint256 nInputs = model.nInputs;
        if (inputRoots.length != nInputs) revert InputRootCountMismatch(nInputs, inputRoots.length);
        if (inputProofs.length != nInputs) revert InputRootCountMismatch(nInputs, inputProofs.length);
        uint256 nValues = model.nValues;
        bytes32 trace = model.traceTemplate;
        for (uint256 i = 0; i < nInputs; ++i) {
            (bytes32 before, bytes32 next) = ListProof.rootsOf(bytes32(0), inputRoots[i], i, nValues, inputProofs[i]);
            if (before != trace) revert InvalidInputProof(i);
            trace = next;
        }
        taskId = _tasks.length;
        Task storage t = _tasks.push();
        t.modelId = modelId;
        t.trace0 = trace;
        t.requester = msg.sender;
        t.status = TaskStatus.Requested;
        emit InferenceRequested(taskId, modelId, msg.sender, inputRoots, trace);
    }

    /// @notice Posts the result of task `taskId` with its backing, `bondAmount × backedGames`:
    ///         the server's stakes for the games it may have to play (one result per task).
    /// @param taskId The task.
    /// @param outputRoot The root of the graph's output (value outputValue).
    /// @param finalTrace The graph trace state after every node.
    /// @param outputProof The list proof of `outputRoot` at position outputValue of `finalTrace`.
    function submitResult(uint256 taskId, bytes32 outputRoot, bytes32 finalTrace, bytes32[] calldata outputProof)
        external
        payable
    {
        Task storage t = _task(taskId);
        if (t.status != TaskStatus.Requested) revert ResultAlreadySubmitted(t.status);
        uint256 backing = bondAmount * backedGames;
        if (msg.value != backing) revert WrongBacking(msg.value, backing);
        _checkOutput(_models[t.modelId], outputRoot, finalTrace, outputProof);
        uint64 deadline = uint64(block.timestamp) + challengeWindow;
        t.status = TaskStatus.Submitted;
        t.server = msg.sender;
        t.outputRoot = outputRoot;
        t.finalTrace = finalTrace;
        t.deadline = deadline;
        t.backing = backing;
        emit ResultSubmitted(taskId, msg.sender, outputRoot, finalTrace, deadline);
    }

    /// @notice Disputes task `taskId`'s result with one stake, within the window: starts a game
    ///         in which the sender is the challenger, holding its stake and one of the server's
    ///         backing. Up to `backedGames` games run at once; the last one pauses the window.
    /// @param taskId The task.
    /// @param outputRoot The challenger's output root.
    /// @param finalTrace The challenger's final graph trace state; it must differ from the server's.
    /// @param outputProof The list proof of `outputRoot` at position outputValue of `finalTrace`.
    /// @return gameId The new game's id (0, 1, ...).
    function challenge(uint256 taskId, bytes32 outputRoot, bytes32 finalTrace, bytes32[] calldata outputProof)
        external
        payable
        returns (uint256 gameId)
    {
        Task storage t = _task(taskId);
        if (t.status != TaskStatus.Submitted) revert NoOpenResult(t.status);
        if (t.pausedAt == 0 && block.timestamp > t.deadline) revert ChallengeWindowClosed(t.deadline);
        if (msg.value != bondAmount) revert WrongBond(msg.value, bondAmount);
        if (t.backing < bondAmount) revert NoBackingLeft(t.openGames);
        if (finalTrace == t.finalTrace) revert SameFinalTrace();
        ModelCommitment storage model = _models[t.modelId];
        _checkOutput(model, outputRoot, finalTrace, outputProof);
        t.openGames += 1;
        t.backing -= bondAmount; // the server's stake in this game
        if (t.backing < bondAmount) {
            t.pausedAt = uint64(block.timestamp);
            emit ChallengeWindowPaused(taskId);
        }
        gameId = _startGame(taskId, t.server, msg.sender, model.nNodes, t.trace0, t.finalTrace);
        emit Challenged(taskId, gameId, msg.sender, outputRoot, finalTrace);
    }

    /// @notice Makes task `taskId`'s result final once its window has passed and no game on it
    ///         is open, and credits the server's backing back.
    /// @dev With no game open the whole backing is free, so the window is not paused.
    /// @param taskId The task.
    function finalize(uint256 taskId) external {
        Task storage t = _task(taskId);
        if (t.status != TaskStatus.Submitted) revert NoOpenResult(t.status);
        if (block.timestamp <= t.deadline) revert ChallengeWindowOpen(t.deadline);
        if (t.openGames != 0) revert GamesPending(t.openGames);
        t.status = TaskStatus.Finalized;
        _creditBacking(t);
        emit ResultFinalized(taskId, t.outputRoot);
    }

    /// @notice Sends the sender its whole credit.
    function withdraw() external {
        uint256 amount = credit[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        credit[msg.sender] = 0;
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert WithdrawFailed();
        emit Withdrawn(msg.sender, amount);
    }

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @notice The commitment registered under `modelId`.
    function getModel(bytes32 modelId) external view returns (ModelCommitment memory) {
        return _model(modelId);
    }

    /// @notice Everything about task `taskId`.
    function getTask(uint256 taskId) external view returns (Task memory) {
        return _task(taskId);
    }

    /// @notice The number of tasks ever requested; ids are 0 .. taskCount() − 1.
    function taskCount() external view returns (uint256) {
        return _tasks.length;
    }

    // ---------------------------------------------------------------------------------------
    // The game's hooks
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc DisputeGame
    function _modelOf(uint256 taskId) internal view override returns (ModelCommitment storage) {
        return _models[_tasks[taskId].modelId];
    }

    /// @inheritdoc DisputeGame
    /// @dev The game's winner takes its two stakes (GAME_STAKES × bondAmount), and nothing else.
    ///      A server that wins while its result is open takes the challenger's stake as credit
    ///      and its own back into the backing (resuming a paused window); the first challenger
    ///      win rejects the result and credits the server the backing no game holds.
    function _onGameEnded(uint256 gameId, Game storage g) internal override {
        Task storage t = _tasks[g.taskId];
        t.openGames -= 1;
        if (g.winner == Party.Server) {
            if (t.status != TaskStatus.Submitted) {
                _credit(g.server, GAME_STAKES * bondAmount);
                return;
            }
            _credit(g.server, bondAmount); // the challenger's stake
            t.backing += bondAmount; // the server's own, free for another game
            if (t.pausedAt != 0) {
                t.deadline += uint64(block.timestamp) - t.pausedAt;
                t.pausedAt = 0;
                emit ChallengeWindowResumed(g.taskId, t.deadline);
            }
            return;
        }
        _credit(g.challenger, GAME_STAKES * bondAmount);
        if (t.status == TaskStatus.Submitted) {
            t.status = TaskStatus.Rejected;
            t.pausedAt = 0;
            _creditBacking(t);
            emit ResultRejected(g.taskId, gameId);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------------

    function _model(bytes32 modelId) private view returns (ModelCommitment storage model) {
        model = _models[modelId];
        if (model.nNodes == 0) revert UnknownModel(modelId);
    }

    function _task(uint256 taskId) private view returns (Task storage) {
        if (taskId >= _tasks.length) revert UnknownTask(taskId);
        return _tasks[taskId];
    }

    function _checkOutput(
        ModelCommitment storage model,
        bytes32 outputRoot,
        bytes32 finalTrace,
        bytes32[] calldata outputProof
    ) private view {
        if (ListProof.rootOf(outputRoot, model.outputValue, model.nValues, outputProof) != finalTrace) {
            revert InvalidOutputProof();
        }
    }

    /// @dev Credits the server the backing no game holds.
    function _creditBacking(Task storage t) private {
        uint256 backing = t.backing;
        t.backing = 0;
        _credit(t.server, backing);
    }

    function _credit(address account, uint256 amount) private {
        if (amount == 0) return;
        credit[account] += amount;
        emit Credited(account, amount);
    }
}
