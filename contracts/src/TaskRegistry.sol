// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ModelCommitment, Commitments} from "./Commitments.sol";
import {DisputeGame} from "./DisputeGame.sol";
import {ListProof} from "./ListProof.sol";
import {MIPS} from "./MIPS.sol";

/// @title TaskRegistry
/// @notice The entry point of opmlc on chain (docs/DESIGN.md, "The dispute protocol"): models are
///         registered by their commitment, requesters ask for inference on input roots, a server
///         posts a result with a bond, and anyone who computes another result challenges it with
///         the same bond within the window, which starts a DisputeGame against the server.
///
///         Every challenge is its own game, and games run side by side: a challenge cannot be
///         pre-empted by a colluding one. The first challenger to win takes its bond back plus
///         the server's, and the result is rejected; a server that wins a game takes that
///         challenger's bond. A result is final once the window has passed and no game is open;
///         `finalize` then returns the server's bond.
/// @dev Bonds are paid by credit (`credit`, `withdraw`): a game's end or a finalize never sends
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
    ///      second a challenge is accepted; `serverBond` the server's bond still held (0 once it
    ///      has been credited to a winning challenger or back to the server).
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
        uint256 serverBond;
    }

    /// @notice A sensible bond for a result and for a challenge.
    uint256 public constant DEFAULT_BOND = 0.1 ether;
    /// @notice A sensible challenge window: recomputing a result natively takes seconds.
    uint64 public constant DEFAULT_CHALLENGE_WINDOW = 1 hours;

    /// @notice The bond a result and each challenge must carry (exactly).
    uint256 public immutable bondAmount;
    /// @notice Seconds after a result is submitted during which it can be challenged.
    uint64 public immutable challengeWindow;

    mapping(bytes32 => ModelCommitment) internal _models;
    Task[] internal _tasks;
    /// @notice Ether each account can withdraw: bonds won or returned.
    mapping(address => uint256) public credit;

    /// @notice A model was registered under `modelId` = keccak256(abi.encode(commitment)).
    event ModelRegistered(bytes32 indexed modelId, ModelCommitment commitment);
    /// @notice Inference on `inputRoots` was requested; `trace0` is its trace state 0.
    event InferenceRequested(
        uint256 indexed taskId, bytes32 indexed modelId, address indexed requester, bytes32[] inputRoots, bytes32 trace0
    );
    /// @notice A result was posted; it can be challenged until `deadline` (inclusive).
    event ResultSubmitted(
        uint256 indexed taskId, address indexed server, bytes32 outputRoot, bytes32 finalTrace, uint64 deadline
    );
    /// @notice A challenger disputed the result with its own output and final trace: game `gameId`.
    event Challenged(
        uint256 indexed taskId, uint256 indexed gameId, address indexed challenger, bytes32 outputRoot, bytes32 finalTrace
    );
    /// @notice A challenger won game `gameId`: the result does not stand.
    event ResultRejected(uint256 indexed taskId, uint256 indexed gameId);
    /// @notice The window passed with no game open: the result stands.
    event ResultFinalized(uint256 indexed taskId, bytes32 outputRoot);
    /// @notice `amount` was added to `account`'s credit.
    event Credited(address indexed account, uint256 amount);
    /// @notice `account` withdrew its credit.
    event Withdrawn(address indexed account, uint256 amount);

    /// @notice The commitment breaks the trace's numbering: nNodes = 0, nInputs > firstNodeValue,
    ///         firstNodeValue + nNodes > nValues or outputValue ≥ nValues.
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
    /// @notice The ether sent is not the bond.
    error WrongBond(uint256 sent, uint256 required);
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

    /// @param mips_ The deployed MIPS single-step verifier.
    /// @param bondAmount_ The bond of a result and of a challenge (DEFAULT_BOND is sensible).
    /// @param challengeWindow_ Seconds to challenge a result (> 0; DEFAULT_CHALLENGE_WINDOW).
    /// @param clockSeconds_ Each party's clock in a game (> 0; DEFAULT_CLOCK_SECONDS).
    constructor(MIPS mips_, uint256 bondAmount_, uint64 challengeWindow_, uint64 clockSeconds_)
        DisputeGame(mips_, clockSeconds_)
    {
        if (challengeWindow_ == 0) revert InvalidChallengeWindow();
        bondAmount = bondAmount_;
        challengeWindow = challengeWindow_;
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
                || commitment.outputValue >= commitment.nValues
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

    /// @notice Posts the result of task `taskId`, with the bond (one result per task).
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
        if (msg.value != bondAmount) revert WrongBond(msg.value, bondAmount);
        _checkOutput(_models[t.modelId], outputRoot, finalTrace, outputProof);
        uint64 deadline = uint64(block.timestamp) + challengeWindow;
        t.status = TaskStatus.Submitted;
        t.server = msg.sender;
        t.outputRoot = outputRoot;
        t.finalTrace = finalTrace;
        t.deadline = deadline;
        t.serverBond = msg.value;
        emit ResultSubmitted(taskId, msg.sender, outputRoot, finalTrace, deadline);
    }

    /// @notice Disputes task `taskId`'s result with the same bond, within the window: starts a
    ///         game in which the sender is the challenger. Any number of games may run at once.
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
        if (block.timestamp > t.deadline) revert ChallengeWindowClosed(t.deadline);
        if (msg.value != bondAmount) revert WrongBond(msg.value, bondAmount);
        if (finalTrace == t.finalTrace) revert SameFinalTrace();
        ModelCommitment storage model = _models[t.modelId];
        _checkOutput(model, outputRoot, finalTrace, outputProof);
        t.openGames += 1;
        gameId = _startGame(taskId, t.server, msg.sender, model.nNodes, t.trace0, t.finalTrace);
        emit Challenged(taskId, gameId, msg.sender, outputRoot, finalTrace);
    }

    /// @notice Makes task `taskId`'s result final once its window has passed and no game on it
    ///         is open, and credits the server's bond back.
    /// @param taskId The task.
    function finalize(uint256 taskId) external {
        Task storage t = _task(taskId);
        if (t.status != TaskStatus.Submitted) revert NoOpenResult(t.status);
        if (block.timestamp <= t.deadline) revert ChallengeWindowOpen(t.deadline);
        if (t.openGames != 0) revert GamesPending(t.openGames);
        t.status = TaskStatus.Finalized;
        uint256 bond = t.serverBond;
        t.serverBond = 0;
        _credit(t.server, bond);
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
    /// @dev The server winning takes the challenger's bond (its own stays with the result); the
    ///      challenger winning takes its bond back plus the server's bond if no one took it yet,
    ///      and the result is rejected.
    function _onGameEnded(uint256 gameId, Game storage g) internal override {
        Task storage t = _tasks[g.taskId];
        t.openGames -= 1;
        if (g.winner == Party.Server) {
            _credit(g.server, bondAmount);
            return;
        }
        uint256 serverBond = t.serverBond;
        t.serverBond = 0;
        _credit(g.challenger, bondAmount + serverBond);
        if (t.status == TaskStatus.Submitted) {
            t.status = TaskStatus.Rejected;
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

    function _credit(address account, uint256 amount) private {
        if (amount == 0) return;
        credit[account] += amount;
        emit Credited(account, amount);
    }
}
