// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ModelCommitment, NodeInfo, PartBase, Commitments} from "./Commitments.sol";
import {ListProof} from "./ListProof.sol";
import {MemoryProof} from "./MemoryProof.sol";
import {MIPS} from "./MIPS.sol";
import {VMState} from "./VMState.sol";

/// @title DisputeGame
/// @notice The bisection game of opmlc (docs/DESIGN.md, "The dispute protocol"): a server that
///         posted a result defends its final graph trace against one challenger. The server
///         makes every claim, the challenger only agrees or disagrees, and one `MIPS.step`
///         settles the last disagreement.
///
///         Phase 1 bisects graph trace states over node indices, from trace state 0 (agreed) to
///         the server's final trace. The hand-off (`startNode`) binds the disputed node on
///         chain: its base root is proven against the model commitment, its input roots against
///         the agreed trace state, its output root against the disputed one, and the initial VM
///         state is derived here from them. Phase 2 bisects VM state hashes over the node's
///         steps, from that initial state (agreed) to the server's final state; phase 3 executes
///         the one step left.
///
///         Each party has a chess clock of `clockSeconds`: a move charges the mover the time
///         since the previous move, and once a mover's time is spent anyone may call `timeout`,
///         which ends the game for the other party.
/// @dev Abstract: TaskRegistry creates games (`_startGame`), gives them their model
///      (`_modelOf`) and pays the stakes when one ends (`_onGameEnded`). Every move emits an event,
///      so parties can follow a game from logs alone and resume after a restart.
abstract contract DisputeGame {
    /// @notice The move a game waits for; the party to move follows from it (`_moverOf`).
    /// @dev Numbered as in the ABI (uint8): None 0, BisectTrace 1, RespondTrace 2, StartNode 3,
    ///      BisectStep 4, RespondStep 5, ProveStep 6, Ended 7, BisectPart 8, RespondPart 9,
    ///      StartPart 10.
    enum Phase {
        None,
        BisectTrace, // phase 1, the server's: claim the trace state at mid
        RespondTrace, // phase 1, the challenger's: agree or not with it
        StartNode, // hand-off, the server's: bind node lo and claim its final VM state
        BisectStep, // phase 2, the server's: claim the state hash at mid
        RespondStep, // phase 2, the challenger's: agree or not with it
        ProveStep, // phase 3, charged to the challenger, callable by anyone: execute step lo
        Ended,
        BisectPart, // split node, the server's: claim the two halves of the disputed subtree
        RespondPart, // split node, the challenger's: pick the half it disputes
        StartPart // hand-off of a split node, the server's: bind part `part` and claim its final state
    }

    /// @notice A side of a game: None 0, Server 1, Challenger 2.
    enum Party {
        None,
        Server,
        Challenger
    }

    /// @notice How a game ended: None 0 (still running), StepProven 1, Timeout 2.
    enum EndReason {
        None,
        StepProven,
        Timeout
    }

    /// @notice Everything about one game (`getGame`).
    /// @dev In phase 1, `lo`/`hi` are node counts and `loHash`/`hiHash` the graph trace states
    ///      after them; in phases 2 and 3 they are step indices of node `node`'s task and the
    ///      state hashes after them. `midHash` is the server's last claim at (lo + hi) / 2.
    ///      The clocks hold each party's seconds left as of `turnStartedAt` (the last move), so
    ///      the mover's live time is its clock minus (now − turnStartedAt).
    struct Game {
        uint256 taskId;
        address server;
        Phase phase;
        Party winner;
        EndReason reason;
        uint32 node;
        address challenger;
        uint64 turnStartedAt;
        uint64 lo;
        uint64 hi;
        uint64 serverClock;
        uint64 challengerClock;
        bytes32 loHash;
        bytes32 hiHash;
        bytes32 midHash;
        // A split node (splitNode … startPart): `hiHash` is the disputed subtree of the node's
        // output tree, `part` its index at depth `partDepth` of the `partsLog2` levels above the
        // parts, `midHash`/`rightHash` the server's last claim of its two halves.
        uint32 part;
        uint8 partDepth;
        uint8 partsLog2;
        bytes32 rightHash;
    }

    /// @notice A sensible clock per party: about a minute per move of the longest games
    ///         (~20 trace rounds, ~40 step rounds) with room for a congested chain.
    uint64 public constant DEFAULT_CLOCK_SECONDS = 2 hours;
    /// @notice Phase 2 covers at most 2^48 steps of one node's task.
    uint256 public constant MAX_LOG2_STEPS = 48;

    /// @notice The single-step verifier of phase 3.
    MIPS public immutable mips;
    /// @notice Seconds on each party's clock at the start of a game.
    uint64 public immutable clockSeconds;

    Game[] internal _games;

    /// @notice A game began: the server must now move.
    event GameStarted(uint256 indexed gameId, uint256 indexed taskId, address indexed challenger, address server);
    /// @notice The server claimed `midTrace` as the graph trace state after `mid` nodes.
    event TraceBisected(uint256 indexed gameId, uint256 mid, bytes32 midTrace);
    /// @notice The challenger answered the last trace claim; [lo, hi] is the new interval.
    event TraceResponded(uint256 indexed gameId, bool agree, uint256 lo, uint256 hi);
    /// @notice The server bound node `node`: phase 2 runs over steps [0, 2^log2Steps] from
    ///         `initialStateHash` (derived on chain) to `finalStateHash` (the server's claim).
    event NodeStarted(
        uint256 indexed gameId,
        uint256 node,
        bytes32 outRoot,
        bytes32 initialStateHash,
        bytes32 finalStateHash,
        uint8 log2Steps
    );
    /// @notice The server bound split node `node`'s output `outRoot`, of 2^partsLog2 parts.
    event NodeSplit(uint256 indexed gameId, uint256 node, bytes32 outRoot, uint8 partsLog2);
    /// @notice The server claimed the halves of the disputed subtree.
    event PartBisected(uint256 indexed gameId, uint256 depth, bytes32 left, bytes32 right);
    /// @notice The challenger picked a half: the disputed subtree is now `part` at `depth`.
    event PartResponded(uint256 indexed gameId, bool right, uint256 depth, uint256 part);
    /// @notice The server bound part `part` of node `node`, as NodeStarted does for a node.
    event PartStarted(
        uint256 indexed gameId,
        uint256 node,
        uint256 part,
        bytes32 partRoot,
        bytes32 initialStateHash,
        bytes32 finalStateHash,
        uint8 log2Steps
    );
    /// @notice The server claimed `midHash` as the state hash after `mid` steps.
    event StepBisected(uint256 indexed gameId, uint256 mid, bytes32 midHash);
    /// @notice The challenger answered the last step claim; [lo, hi] is the new interval.
    event StepResponded(uint256 indexed gameId, bool agree, uint256 lo, uint256 hi);
    /// @notice `MIPS.step` executed step `step` (from the state after `step` steps) and gave
    ///         `postStateHash`.
    event StepProven(uint256 indexed gameId, uint256 step, bytes32 postStateHash);
    /// @notice The game is over.
    event GameEnded(uint256 indexed gameId, uint256 indexed taskId, Party winner, EndReason reason);

    /// @notice No game has this id.
    error UnknownGame(uint256 gameId);
    /// @notice The move called is not the one the game waits for (`awaiting`).
    error UnexpectedMove(Phase awaiting);
    /// @notice The right move, sent by someone other than the party to move (`mover`).
    error NotYourTurn(address mover);
    /// @notice The mover's clock ran out before this move: the game can only end by `timeout`.
    error ClockExpired(Party mover);
    /// @notice `timeout` called while the mover still has `secondsLeft`.
    error ClockNotExpired(uint256 secondsLeft);
    /// @notice A clock of 0 seconds.
    error InvalidClock();
    /// @notice startNode: the node leaf is not at index lo of the model's node list.
    error InvalidNodeProof();
    /// @notice startNode: `outProof` does not show a zero leaf at node lo's output value in
    ///         trace[lo] and `outRoot` there in trace[hi], every other leaf equal.
    error InvalidNodeOutputProof();
    /// @notice startNode: the NodeInfo's operand arrays differ in length.
    error MalformedNodeInfo();
    /// @notice startNode: `got` input roots, input proofs or splice proofs for a node of
    ///         `expected` operands.
    error InputCountMismatch(uint256 expected, uint256 got);
    /// @notice startNode: input `index`'s root is not at its value's position in trace[lo].
    error InvalidNodeInputProof(uint256 index);
    /// @notice startNode: input `index`'s region is not a zero region of the root built so far.
    error InvalidSpliceProof(uint256 index);
    /// @notice startNode: the final state did not exit with code 0.
    error FinalStateNotExitedZero(uint8 exited, uint8 exitCode);
    /// @notice startNode: the final state's output region does not hold `outRoot`.
    error InvalidOutputRegionProof();
    /// @notice startNode: `log2Steps` above MAX_LOG2_STEPS.
    error TooManySteps(uint256 log2Steps);
    /// @notice startNode/startPart: `log2Steps` above the model's step budget.
    error StepBudgetExceeded(uint256 log2Steps, uint256 log2Budget);
    /// @notice startNode on a split node, or startPart with a NodeInfo whose partsLog2 is not
    ///         the one splitNode claimed.
    error PartsMismatch(uint256 claimed, uint256 nodeParts);
    /// @notice splitNode: partsLog2 0 or above 32.
    error InvalidPartsLog2(uint256 partsLog2);
    /// @notice bisectPart: keccak256(left ‖ right) is not the disputed subtree's root.
    error InvalidPartSplit();
    /// @notice startPart: the part's base root is not at index `part` of the node's part list.
    error InvalidPartBaseRoot();
    /// @notice proveStep: the pre-state does not hash to the agreed state hash at lo.
    error PreStateMismatch(bytes32 expected, bytes32 got);

    /// @param mips_ The deployed MIPS single-step verifier.
    /// @param clockSeconds_ Seconds on each party's clock at the start of a game (> 0).
    constructor(MIPS mips_, uint64 clockSeconds_) {
        if (clockSeconds_ == 0) revert InvalidClock();
        mips = mips_;
        clockSeconds = clockSeconds_;
    }

    // ---------------------------------------------------------------------------------------
    // Phase 1: graph trace states over node indices
    // ---------------------------------------------------------------------------------------

    /// @notice The server's phase-1 claim: the graph trace state after mid = (lo + hi) / 2 nodes.
    /// @param gameId The game.
    /// @param midTrace The trace state (list root over all value roots) after `mid` nodes.
    function bisectTrace(uint256 gameId, bytes32 midTrace) external {
        Game storage g = _beginMove(gameId, Phase.BisectTrace);
        g.midHash = midTrace;
        g.phase = Phase.RespondTrace;
        emit TraceBisected(gameId, (uint256(g.lo) + g.hi) / 2, midTrace);
    }

    /// @notice The challenger's answer to the last trace claim: agree → lo = mid, else hi = mid.
    ///         When one node is left (hi = lo + 1), the server must call `startNode`.
    /// @param gameId The game.
    /// @param agree Whether the challenger's trace state after mid nodes is the server's.
    function respondTrace(uint256 gameId, bool agree) external {
        Game storage g = _beginMove(gameId, Phase.RespondTrace);
        _narrow(g, agree);
        g.phase = g.hi - g.lo == 1 ? Phase.StartNode : Phase.BisectTrace;
        emit TraceResponded(gameId, agree, g.lo, g.hi);
    }

    // ---------------------------------------------------------------------------------------
    // Hand-off: bind node lo and derive its initial VM state
    // ---------------------------------------------------------------------------------------

    /// @notice The server binds the disputed node k = lo and claims its final VM state.
    /// @dev Checks, in order: the node leaf is at index k of `nodesRoot`; `outProof` shows a zero
    ///      leaf at position firstNodeValue + k of trace[lo] and `outRoot` there in trace[hi];
    ///      each input root is at its value's position in trace[lo] and is spliced over a zero
    ///      region into `baseRoot`, in order, each splice proof taken against the root after the
    ///      previous splice; the initial state S0 = (memRoot, pc = entry, nextPC = entry + 4,
    ///      $sp = 0x7FFFF000, all else 0); `finalState` exited with code 0 and holds `outRoot`
    ///      at the output region. Phase 2 then runs over steps [0, 2^log2Steps] from hash(S0)
    ///      (agreed) to hash(finalState) (the server's); with log2Steps = 0 it is at once
    ///      phase 3.
    /// @param gameId The game.
    /// @param node The NodeInfo of node k.
    /// @param nodeProof Its leaf's list proof in the model's node list.
    /// @param outRoot The root of node k's output.
    /// @param outProof The list proof of position firstNodeValue + k, shared by trace[lo] and trace[hi].
    /// @param inputRoots The roots of node k's operands, in NodeInfo order.
    /// @param inputProofs Their list proofs against trace[lo].
    /// @param spliceProofs For each operand, its region's 27 − height siblings (32 bytes each).
    /// @param finalState The server's 186-byte final state of node k's task.
    /// @param outRegionProof The output region's 27 − outputHeight siblings in `finalState`'s memory.
    /// @param log2Steps Phase 2 covers 2^log2Steps steps (≤ MAX_LOG2_STEPS); past its exit a
    ///        trace repeats its exited state.
    function startNode(
        uint256 gameId,
        NodeInfo calldata node,
        bytes32[] calldata nodeProof,
        bytes32 outRoot,
        bytes32[] calldata outProof,
        bytes32[] calldata inputRoots,
        bytes32[][] calldata inputProofs,
        bytes[] calldata spliceProofs,
        bytes calldata finalState,
        bytes calldata outRegionProof,
        uint8 log2Steps
    ) external {
        Game storage g = _beginMove(gameId, Phase.StartNode);
        ModelCommitment storage model = _modelOf(g.taskId);
        uint256 k = g.lo;

        if (ListProof.rootOf(Commitments.nodeLeaf(node), k, model.nNodes, nodeProof) != model.nodesRoot) {
            revert InvalidNodeProof();
        }
        (bytes32 traceBefore, bytes32 traceAfter) =
            ListProof.rootsOf(bytes32(0), outRoot, uint256(model.firstNodeValue) + k, model.nValues, outProof);
        if (traceBefore != g.loHash || traceAfter != g.hiHash) revert InvalidNodeOutputProof();

        if (node.partsLog2 != 0) revert PartsMismatch(0, node.partsLog2);

        bytes32 memRoot = _spliceInputs(node, node.baseRoot, g.loHash, model.nValues, inputRoots, inputProofs, spliceProofs);
        bytes32 initialHash = VMState.hash(VMState.initialState(memRoot, model.entry));
        bytes32 finalHash = _checkFinalState(node, outRoot, finalState, outRegionProof);
        _checkSteps(model, log2Steps);

        g.node = uint32(k);
        _startSteps(g, initialHash, finalHash, log2Steps);
        emit NodeStarted(gameId, k, outRoot, initialHash, finalHash, log2Steps);
    }

    // ---------------------------------------------------------------------------------------
    // A split node: descend its output tree to one part, then bind that part's task
    // ---------------------------------------------------------------------------------------

    /// @notice Instead of startNode, for a node split into 2^partsLog2 parts: binds node k = lo's
    ///         output root (the same trace proof as startNode's) and starts the descent of its
    ///         output tree, partsLog2 rounds of bisectPart/respondPart, to the one part the
    ///         challenger disputes. Each round's halves must hash to the subtree above them, so
    ///         the part's root is a subtree of the claimed output by construction.
    /// @param gameId The game.
    /// @param outRoot The root of node k's output.
    /// @param outProof As startNode's.
    /// @param partsLog2 The node's parts (its NodeInfo's, checked by startPart), 1..32.
    function splitNode(uint256 gameId, bytes32 outRoot, bytes32[] calldata outProof, uint8 partsLog2) external {
        Game storage g = _beginMove(gameId, Phase.StartNode);
        ModelCommitment storage model = _modelOf(g.taskId);
        uint256 k = g.lo;
        if (partsLog2 == 0 || partsLog2 > 32) revert InvalidPartsLog2(partsLog2);
        (bytes32 traceBefore, bytes32 traceAfter) =
            ListProof.rootsOf(bytes32(0), outRoot, uint256(model.firstNodeValue) + k, model.nValues, outProof);
        if (traceBefore != g.loHash || traceAfter != g.hiHash) revert InvalidNodeOutputProof();
        g.node = uint32(k);
        g.hiHash = outRoot; // trace[hi] is spent: from here on, the disputed subtree
        g.partsLog2 = partsLog2;
        g.phase = Phase.BisectPart;
        emit NodeSplit(gameId, k, outRoot, partsLog2);
    }

    /// @notice The server's claim of the disputed subtree's two halves.
    /// @param gameId The game.
    /// @param left The root of its left half.
    /// @param right The root of its right half.
    function bisectPart(uint256 gameId, bytes32 left, bytes32 right) external {
        Game storage g = _beginMove(gameId, Phase.BisectPart);
        if (keccak256(abi.encodePacked(left, right)) != g.hiHash) revert InvalidPartSplit();
        g.midHash = left;
        g.rightHash = right;
        g.phase = Phase.RespondPart;
        emit PartBisected(gameId, g.partDepth, left, right);
    }

    /// @notice The challenger picks the half it disputes (one whose root differs from its own).
    /// @param gameId The game.
    /// @param right True for the right half.
    function respondPart(uint256 gameId, bool right) external {
        Game storage g = _beginMove(gameId, Phase.RespondPart);
        g.hiHash = right ? g.rightHash : g.midHash;
        g.part = g.part * 2 + (right ? 1 : 0);
        g.partDepth += 1;
        g.phase = g.partDepth == g.partsLog2 ? Phase.StartPart : Phase.BisectPart;
        emit PartResponded(gameId, right, g.partDepth, g.part);
    }

    /// @notice The hand-off of a split node: binds part j = `part` of node k and claims its final
    ///         VM state. As startNode, except that the node leaf's partsLog2 must be the one
    ///         splitNode claimed, the task's base root is `partBaseRoot` proven at index j of the
    ///         node's part list (NodeInfo.baseRoot), and the final state must hold the disputed
    ///         part's root at the NodeInfo's output region (the part's slice of the output).
    /// @param gameId The game.
    /// @param node The NodeInfo of node k.
    /// @param nodeProof Its leaf's list proof in the model's node list.
    /// @param partBase The base root of part j's task and its list proof in the node's part list
    ///        (partsLog2 siblings).
    /// @param inputRoots As startNode's.
    /// @param inputProofs As startNode's.
    /// @param spliceProofs As startNode's, in the part's base root.
    /// @param finalState The server's final state of part j's task.
    /// @param outRegionProof The output region's siblings in `finalState`'s memory.
    /// @param log2Steps As startNode's (≤ the model's step budget).
    function startPart(
        uint256 gameId,
        NodeInfo calldata node,
        bytes32[] calldata nodeProof,
        PartBase calldata partBase,
        bytes32[] calldata inputRoots,
        bytes32[][] calldata inputProofs,
        bytes[] calldata spliceProofs,
        bytes calldata finalState,
        bytes calldata outRegionProof,
        uint8 log2Steps
    ) external {
        Game storage g = _beginMove(gameId, Phase.StartPart);
        ModelCommitment storage model = _modelOf(g.taskId);
        if (ListProof.rootOf(Commitments.nodeLeaf(node), g.node, model.nNodes, nodeProof) != model.nodesRoot) {
            revert InvalidNodeProof();
        }
        if (node.partsLog2 != g.partsLog2) revert PartsMismatch(g.partsLog2, node.partsLog2);
        if (ListProof.rootOf(partBase.root, g.part, uint256(1) << g.partsLog2, partBase.proof) != node.baseRoot) {
            revert InvalidPartBaseRoot();
        }
        bytes32 memRoot = _spliceInputs(node, partBase.root, g.loHash, model.nValues, inputRoots, inputProofs, spliceProofs);
        bytes32 initialHash = VMState.hash(VMState.initialState(memRoot, model.entry));
        bytes32 partRoot = g.hiHash;
        bytes32 finalHash = _checkFinalState(node, partRoot, finalState, outRegionProof);
        _checkSteps(model, log2Steps);

        _startSteps(g, initialHash, finalHash, log2Steps);
        emit PartStarted(gameId, g.node, g.part, partRoot, initialHash, finalHash, log2Steps);
    }

    // ---------------------------------------------------------------------------------------
    // Phase 2: VM state hashes over step indices
    // ---------------------------------------------------------------------------------------

    /// @notice The server's phase-2 claim: the state hash after mid = (lo + hi) / 2 steps.
    /// @param gameId The game.
    /// @param midHash The state hash (vm.state.state_hash) after `mid` steps.
    function bisectStep(uint256 gameId, bytes32 midHash) external {
        Game storage g = _beginMove(gameId, Phase.BisectStep);
        g.midHash = midHash;
        g.phase = Phase.RespondStep;
        emit StepBisected(gameId, (uint256(g.lo) + g.hi) / 2, midHash);
    }

    /// @notice The challenger's answer to the last step claim: agree → lo = mid, else hi = mid.
    ///         When one step is left (hi = lo + 1), the game waits for `proveStep`.
    /// @param gameId The game.
    /// @param agree Whether the challenger's state hash after mid steps is the server's.
    function respondStep(uint256 gameId, bool agree) external {
        Game storage g = _beginMove(gameId, Phase.RespondStep);
        _narrow(g, agree);
        g.phase = g.hi - g.lo == 1 ? Phase.ProveStep : Phase.BisectStep;
        emit StepResponded(gameId, agree, g.lo, g.hi);
    }

    // ---------------------------------------------------------------------------------------
    // Phase 3: one step on chain
    // ---------------------------------------------------------------------------------------

    /// @notice Executes step lo with `MIPS.step`: the challenger wins if the result is not the
    ///         server's hash at hi, the server wins if it is.
    /// @dev The challenger's move, charged to its clock, but anyone may send it (an honest
    ///      server may end the game rather than wait for the clock). A bad memory proof reverts
    ///      inside MIPS.step (MemoryProof.InvalidMemoryProof) and changes nothing.
    /// @param gameId The game.
    /// @param preState The 186-byte state after lo steps; it must hash to the agreed hash at lo.
    /// @param proof The step's memory proofs (vm.witness.step_with_proof).
    function proveStep(uint256 gameId, bytes calldata preState, bytes calldata proof) external {
        Game storage g = _beginMove(gameId, Phase.ProveStep);
        bytes32 preHash = VMState.hash(preState);
        if (preHash != g.loHash) revert PreStateMismatch(g.loHash, preHash);
        bytes32 postHash = mips.step(preState, proof);
        emit StepProven(gameId, g.lo, postHash);
        _end(gameId, g, postHash == g.hiHash ? Party.Server : Party.Challenger, EndReason.StepProven);
    }

    // ---------------------------------------------------------------------------------------
    // Clocks
    // ---------------------------------------------------------------------------------------

    /// @notice Ends the game for the waiting party once the moving party's clock is spent.
    ///         Anyone may call it.
    /// @param gameId The game.
    function timeout(uint256 gameId) external {
        Game storage g = _game(gameId);
        Phase phase = g.phase;
        if (phase == Phase.Ended) revert UnexpectedMove(phase);
        Party mover = _moverOf(phase);
        uint256 left = mover == Party.Server ? g.serverClock : g.challengerClock;
        uint256 elapsed = block.timestamp - g.turnStartedAt;
        if (elapsed <= left) revert ClockNotExpired(left - elapsed);
        _end(gameId, g, mover == Party.Server ? Party.Challenger : Party.Server, EndReason.Timeout);
    }

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @notice The full state of game `gameId`.
    function getGame(uint256 gameId) external view returns (Game memory) {
        return _game(gameId);
    }

    /// @notice The number of games ever started; ids are 0 .. gameCount() − 1.
    function gameCount() external view returns (uint256) {
        return _games.length;
    }

    /// @notice Seconds left on each clock now (the mover's counts down since its turn began).
    /// @param gameId The game.
    /// @return server The server's seconds left (0 when spent).
    /// @return challenger The challenger's seconds left (0 when spent).
    function clocksLeft(uint256 gameId) external view returns (uint256 server, uint256 challenger) {
        Game storage g = _game(gameId);
        server = g.serverClock;
        challenger = g.challengerClock;
        if (g.phase == Phase.Ended) return (server, challenger);
        uint256 elapsed = block.timestamp - g.turnStartedAt;
        if (_moverOf(g.phase) == Party.Server) {
            server = elapsed >= server ? 0 : server - elapsed;
        } else {
            challenger = elapsed >= challenger ? 0 : challenger - elapsed;
        }
    }

    // ---------------------------------------------------------------------------------------
    // For the registry
    // ---------------------------------------------------------------------------------------

    /// @notice The model commitment of task `taskId`.
    function _modelOf(uint256 taskId) internal view virtual returns (ModelCommitment storage);

    /// @notice Called once when game `gameId` ends, after `g.winner` is set: stakes and the task.
    function _onGameEnded(uint256 gameId, Game storage g) internal virtual;

    /// @notice Starts a game of phase 1 over [0, nNodes], from `trace0` to `finalTrace`.
    function _startGame(
        uint256 taskId,
        address server,
        address challenger,
        uint256 nNodes,
        bytes32 trace0,
        bytes32 finalTrace
    ) internal returns (uint256 gameId) {
        gameId = _games.length;
        Game storage g = _games.push();
        g.taskId = taskId;
        g.server = server;
        g.challenger = challenger;
        g.phase = nNodes == 1 ? Phase.StartNode : Phase.BisectTrace;
        g.turnStartedAt = uint64(block.timestamp);
        g.hi = uint64(nNodes);
        g.serverClock = clockSeconds;
        g.challengerClock = clockSeconds;
        g.loHash = trace0;
        g.hiHash = finalTrace;
        emit GameStarted(gameId, taskId, challenger, server);
    }

    // ---------------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------------

    function _game(uint256 gameId) internal view returns (Game storage) {
        if (gameId >= _games.length) revert UnknownGame(gameId);
        return _games[gameId];
    }

    /// @dev Who must move in `phase`: the server claims, the challenger answers and proves.
    function _moverOf(Phase phase) internal pure returns (Party) {
        if (
            phase == Phase.BisectTrace || phase == Phase.StartNode || phase == Phase.BisectStep
                || phase == Phase.BisectPart || phase == Phase.StartPart
        ) return Party.Server;
        return Party.Challenger;
    }

    /// @dev Checks that `expected` is the move the game waits for and that the mover sends it
    ///      (anyone may send proveStep), then charges the mover's clock and starts the next turn.
    function _beginMove(uint256 gameId, Phase expected) private returns (Game storage g) {
        g = _game(gameId);
        if (g.phase != expected) revert UnexpectedMove(g.phase);
        Party mover = _moverOf(expected);
        if (expected != Phase.ProveStep) {
            address moverAddress = mover == Party.Server ? g.server : g.challenger;
            if (msg.sender != moverAddress) revert NotYourTurn(moverAddress);
        }
        uint256 elapsed = block.timestamp - g.turnStartedAt;
        uint256 left = mover == Party.Server ? g.serverClock : g.challengerClock;
        if (elapsed > left) revert ClockExpired(mover);
        if (mover == Party.Server) g.serverClock = uint64(left - elapsed);
        else g.challengerClock = uint64(left - elapsed);
        g.turnStartedAt = uint64(block.timestamp);
    }

    /// @dev The challenger's answer to the claim at mid: agree → lo = mid, else hi = mid.
    function _narrow(Game storage g, bool agree) private {
        uint64 mid = uint64((uint256(g.lo) + g.hi) / 2);
        if (agree) {
            g.lo = mid;
            g.loHash = g.midHash;
        } else {
            g.hi = mid;
            g.hiHash = g.midHash;
        }
    }

    /// @dev log2Steps within the game's and the model's bounds.
    function _checkSteps(ModelCommitment storage model, uint8 log2Steps) private view {
        if (log2Steps > MAX_LOG2_STEPS) revert TooManySteps(log2Steps);
        if (log2Steps > model.log2StepBudget) revert StepBudgetExceeded(log2Steps, model.log2StepBudget);
    }

    /// @dev Phase 2 over [0, 2^log2Steps] from the derived initial state to the claimed final one.
    function _startSteps(Game storage g, bytes32 initialHash, bytes32 finalHash, uint8 log2Steps) private {
        g.lo = 0;
        g.hi = uint64(1) << log2Steps;
        g.loHash = initialHash;
        g.hiHash = finalHash;
        g.phase = log2Steps == 0 ? Phase.ProveStep : Phase.BisectStep;
    }

    /// @dev The memory root of the task: `baseRoot` with each operand's root, proven against
    ///      `trace`, spliced over its zero region in NodeInfo order.
    function _spliceInputs(
        NodeInfo calldata node,
        bytes32 baseRoot,
        bytes32 trace,
        uint256 nValues,
        bytes32[] calldata inputRoots,
        bytes32[][] calldata inputProofs,
        bytes[] calldata spliceProofs
    ) private pure returns (bytes32 memRoot) {
        uint256 n = node.inputValues.length;
        if (node.inputAddrs.length != n || node.inputHeights.length != n) revert MalformedNodeInfo();
        if (inputRoots.length != n) revert InputCountMismatch(n, inputRoots.length);
        if (inputProofs.length != n) revert InputCountMismatch(n, inputProofs.length);
        if (spliceProofs.length != n) revert InputCountMismatch(n, spliceProofs.length);
        memRoot = baseRoot;
        for (uint256 i = 0; i < n; ++i) {
            bytes32 inputRoot = inputRoots[i];
            if (ListProof.rootOf(inputRoot, node.inputValues[i], nValues, inputProofs[i]) != trace) {
                revert InvalidNodeInputProof(i);
            }
            uint256 addr = node.inputAddrs[i];
            uint256 height = node.inputHeights[i];
            bytes32 zeroRegion = MemoryProof.zeroHash(height);
            if (!MemoryProof.verifySubtree(memRoot, addr, height, zeroRegion, spliceProofs[i])) {
                revert InvalidSpliceProof(i);
            }
            memRoot = MemoryProof.spliceSubtree(memRoot, addr, height, zeroRegion, inputRoot, spliceProofs[i]);
        }
    }

    /// @dev The hash of the server's final state, after checking that it exited with code 0
    ///      and holds `outRoot` at node's output region.
    function _checkFinalState(
        NodeInfo calldata node,
        bytes32 outRoot,
        bytes calldata finalState,
        bytes calldata outRegionProof
    ) private pure returns (bytes32) {
        uint8 exited = VMState.exited(finalState);
        uint8 exitCode = VMState.exitCode(finalState);
        if (exited != 1 || exitCode != 0) revert FinalStateNotExitedZero(exited, exitCode);
        if (!MemoryProof.verifySubtree(
                VMState.memRoot(finalState), node.outputAddr, node.outputHeight, outRoot, outRegionProof
            )) {
            revert InvalidOutputRegionProof();
        }
        return VMState.hash(finalState);
    }

    /// @dev Ends the game with `winner`, then lets the registry pay the stakes and settle the task.
    function _end(uint256 gameId, Game storage g, Party winner, EndReason reason) private {
        g.phase = Phase.Ended;
        g.winner = winner;
        g.reason = reason;
        emit GameEnded(gameId, g.taskId, winner, reason);
        _onGameEnded(gameId, g);
    }
}
