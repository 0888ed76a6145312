// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MemoryProof} from "./MemoryProof.sol";
import {VMState} from "./VMState.sol";

/// @title MIPS
/// @notice The on-chain single-step verifier of opmlc: executes one MIPS32 big-endian instruction
///         of a VM state, exactly as vm/step.py does, and returns the post-state hash.
/// @dev The semantics are those of docs/DESIGN.md ("The VM's instruction semantics"). The
///      functions below are vm/step.py's, family by family and under the same names (`_special`,
///      `_regimm`, `_jump`, `_branch`, `_immediate`, `_special2`, `_load`, `_store`, `_panic`,
///      `_advance`, `_takeBranch`), so that the two read side by side.
///
///      The 186-byte state is copied once from calldata into memory and edited in place, field by
///      field, in its packed big-endian layout; the post-state hash is keccak256 over that same
///      buffer. Nothing is stored, so `step` is `pure`: it can be called with eth_call, inside a
///      transaction, and by the dispute game without any trust in this contract's storage.
///
///      Gas: about 6,500 execution gas for a step without data access, 11,500 for a load and
///      13,200 for a store (bench/gas.py); the 27-level keccak folds of the memory proofs, in
///      MemoryProof's assembly, are most of it.
contract MIPS {
    // ---------------------------------------------------------------------------------------
    // State layout (VMState.sol defines it): memRoot ‖ pc ‖ nextPC ‖ lo ‖ hi ‖ step ‖ exitCode ‖
    // exited ‖ registers[32]. Short local names for the offsets this contract edits.
    // ---------------------------------------------------------------------------------------

    uint256 internal constant STATE_LENGTH = VMState.STATE_LENGTH;
    uint256 internal constant OFFSET_PC = VMState.OFFSET_PC;
    uint256 internal constant OFFSET_NEXT_PC = VMState.OFFSET_NEXT_PC;
    uint256 internal constant OFFSET_LO = VMState.OFFSET_LO;
    uint256 internal constant OFFSET_HI = VMState.OFFSET_HI;
    uint256 internal constant OFFSET_STEP = VMState.OFFSET_STEP;
    uint256 internal constant OFFSET_EXIT_CODE = VMState.OFFSET_EXIT_CODE;
    uint256 internal constant OFFSET_EXITED = VMState.OFFSET_EXITED;
    uint256 internal constant OFFSET_REGISTERS = VMState.OFFSET_REGISTERS;

    /// @notice The exit code a panic leaves.
    uint256 internal constant PANIC_EXIT_CODE = 0xFF;

    /// @notice Bytes of one memory proof (leaf and 27 siblings); a step proof is one (the fetch)
    ///         or two (the fetch, then a load's or store's word).
    uint256 internal constant MEMORY_PROOF_LENGTH = 896;

    uint256 internal constant U32_MASK = 0xFFFFFFFF;
    uint256 internal constant U64_MASK = 0xFFFFFFFFFFFFFFFF;

    // Registers by role.
    uint256 internal constant REG_V0 = 2;
    uint256 internal constant REG_A0 = 4;
    uint256 internal constant REG_RA = 31;

    // Linux o32 syscall numbers the VM honours; any other syscall panics.
    uint256 internal constant SYS_EXIT = 4001;
    uint256 internal constant SYS_EXIT_GROUP = 4246;

    // Primary opcodes (insn >> 26).
    uint256 internal constant OP_SPECIAL = 0x00;
    uint256 internal constant OP_REGIMM = 0x01;
    uint256 internal constant OP_J = 0x02;
    uint256 internal constant OP_JAL = 0x03;
    uint256 internal constant OP_BEQ = 0x04;
    uint256 internal constant OP_BNE = 0x05;
    uint256 internal constant OP_BLEZ = 0x06;
    uint256 internal constant OP_BGTZ = 0x07;
    uint256 internal constant OP_ADDI = 0x08;
    uint256 internal constant OP_ADDIU = 0x09;
    uint256 internal constant OP_SLTI = 0x0A;
    uint256 internal constant OP_SLTIU = 0x0B;
    uint256 internal constant OP_ANDI = 0x0C;
    uint256 internal constant OP_ORI = 0x0D;
    uint256 internal constant OP_XORI = 0x0E;
    uint256 internal constant OP_LUI = 0x0F;
    uint256 internal constant OP_SPECIAL2 = 0x1C;
    uint256 internal constant OP_LB = 0x20;
    uint256 internal constant OP_LH = 0x21;
    uint256 internal constant OP_LWL = 0x22;
    uint256 internal constant OP_LW = 0x23;
    uint256 internal constant OP_LBU = 0x24;
    uint256 internal constant OP_LHU = 0x25;
    uint256 internal constant OP_LWR = 0x26;
    uint256 internal constant OP_SB = 0x28;
    uint256 internal constant OP_SH = 0x29;
    uint256 internal constant OP_SWL = 0x2A;
    uint256 internal constant OP_SW = 0x2B;
    uint256 internal constant OP_SWR = 0x2E;

    // SPECIAL function fields (insn & 0x3F).
    uint256 internal constant FN_SLL = 0x00;
    uint256 internal constant FN_SRL = 0x02;
    uint256 internal constant FN_SRA = 0x03;
    uint256 internal constant FN_SLLV = 0x04;
    uint256 internal constant FN_SRLV = 0x06;
    uint256 internal constant FN_SRAV = 0x07;
    uint256 internal constant FN_JR = 0x08;
    uint256 internal constant FN_JALR = 0x09;
    uint256 internal constant FN_MOVZ = 0x0A;
    uint256 internal constant FN_MOVN = 0x0B;
    uint256 internal constant FN_SYSCALL = 0x0C;
    uint256 internal constant FN_BREAK = 0x0D;
    uint256 internal constant FN_MFHI = 0x10;
    uint256 internal constant FN_MTHI = 0x11;
    uint256 internal constant FN_MFLO = 0x12;
    uint256 internal constant FN_MTLO = 0x13;
    uint256 internal constant FN_MULT = 0x18;
    uint256 internal constant FN_MULTU = 0x19;
    uint256 internal constant FN_DIV = 0x1A;
    uint256 internal constant FN_DIVU = 0x1B;
    uint256 internal constant FN_ADD = 0x20;
    uint256 internal constant FN_ADDU = 0x21;
    uint256 internal constant FN_SUB = 0x22;
    uint256 internal constant FN_SUBU = 0x23;
    uint256 internal constant FN_AND = 0x24;
    uint256 internal constant FN_OR = 0x25;
    uint256 internal constant FN_XOR = 0x26;
    uint256 internal constant FN_NOR = 0x27;
    uint256 internal constant FN_SLT = 0x2A;
    uint256 internal constant FN_SLTU = 0x2B;
    uint256 internal constant FN_TEQ = 0x34;

    // REGIMM rt fields.
    uint256 internal constant RT_BLTZ = 0x00;
    uint256 internal constant RT_BGEZ = 0x01;
    uint256 internal constant RT_BLTZAL = 0x10;
    uint256 internal constant RT_BGEZAL = 0x11;

    // SPECIAL2 function fields.
    uint256 internal constant FN2_MADD = 0x00;
    uint256 internal constant FN2_MADDU = 0x01;
    uint256 internal constant FN2_MUL = 0x02;
    uint256 internal constant FN2_MSUB = 0x04;
    uint256 internal constant FN2_MSUBU = 0x05;
    uint256 internal constant FN2_CLZ = 0x20;
    uint256 internal constant FN2_CLO = 0x21;

    /// @notice The state is not 186 bytes.
    error InvalidStateLength(uint256 length);
    /// @notice The state's `exited` byte is neither 0 nor 1.
    error InvalidExitedFlag(uint256 exited);

    /// @notice Executes one instruction of `state` and returns the hash of the state after it.
    /// @dev `pure`: reads only its calldata, writes nothing, so eth_call, a transaction and the
    ///      dispute game all get the same answer. Memory proofs are checked against the state's
    ///      memory root; a bad one reverts with `MemoryProof.InvalidMemoryProof`. A step of an
    ///      exited state returns the state's own hash and reads no proof.
    /// @param state The 186-byte VM state (docs/DESIGN.md, "Commitments").
    /// @param proof The memory proof of the word at pc, followed for a load or store by the memory
    ///        proof of the aligned word it accesses, both against the state's memory root (896
    ///        bytes each). Bytes beyond those the step reads are ignored.
    /// @return postStateHash keccak256 of the post-state with its top byte replaced by the status
    ///         (0 exited with code 0, 1 exited with code 1, 2 exited otherwise, 3 running).
    function step(bytes calldata state, bytes calldata proof) external pure returns (bytes32 postStateHash) {
        if (state.length != STATE_LENGTH) revert InvalidStateLength(state.length);
        uint256 s = _loadState(state);
        uint256 exited = _u8(s, OFFSET_EXITED);
        if (exited > 1) revert InvalidExitedFlag(exited);
        if (exited == 1) return _stateHash(s);

        // Every step of a running state counts, panics included, so the counter moves here once
        // rather than in each ending as vm/step.py does.
        unchecked {
            _setU64(s, OFFSET_STEP, (_u64(s, OFFSET_STEP) + 1) & U64_MASK);
        }
        uint256 pc = _u32(s, OFFSET_PC);
        if (pc & 3 != 0) return _panic(s);
        uint256 insn = MemoryProof.readWord(_memRoot(s), pc, _memoryProof(proof, 0));
        uint256 op = insn >> 26;
        if (op == OP_SPECIAL) return _special(s, insn);
        if (op == OP_REGIMM) return _regimm(s, insn);
        if (op == OP_J || op == OP_JAL) return _jump(s, insn);
        if (op >= OP_BEQ && op <= OP_BGTZ) return _branch(s, insn);
        if (op >= OP_ADDI && op <= OP_LUI) return _immediate(s, insn);
        if (op == OP_SPECIAL2) return _special2(s, insn);
        if (op >= OP_LB && op <= OP_LWR) return _load(s, insn, proof);
        if (op == OP_SB || op == OP_SH || op == OP_SWL || op == OP_SW || op == OP_SWR) {
            return _store(s, insn, proof);
        }
        return _panic(s);
    }

    // ---------------------------------------------------------------------------------------
    // Instruction families, named and ordered as in vm/step.py
    // ---------------------------------------------------------------------------------------

    /// @dev Opcode 0: register ALU, shifts, jr/jalr, movz/movn, HI/LO, mult/div, syscall, teq.
    ///      add and sub panic on signed overflow; div/divu by zero panic; div truncates toward
    ///      zero with the remainder taking the dividend's sign, INT_MIN / -1 giving LO = INT_MIN,
    ///      HI = 0 (EVM sdiv/smod on sign-extended operands give exactly that).
    function _special(uint256 s, uint256 insn) internal pure returns (bytes32) {
        unchecked {
            uint256 fn = insn & 0x3F;
            uint256 rs = _reg(s, (insn >> 21) & 31);
            uint256 rt = _reg(s, (insn >> 16) & 31);
            uint256 rd = (insn >> 11) & 31;

            if (fn == FN_JR || fn == FN_JALR) {
                if (_inDelaySlot(s)) return _panic(s);
                // rs was read first: jalr with rd == rs jumps to the old value.
                if (fn == FN_JALR) _setReg(s, rd, (_u32(s, OFFSET_PC) + 8) & U32_MASK);
                return _takeBranch(s, true, rs);
            }
            if (fn == FN_SYSCALL) {
                uint256 v0 = _reg(s, REG_V0);
                if (v0 != SYS_EXIT && v0 != SYS_EXIT_GROUP) return _panic(s);
                // exit leaves pc and nextPC where they are.
                _setU8(s, OFFSET_EXIT_CODE, _reg(s, REG_A0) & 0xFF);
                _setU8(s, OFFSET_EXITED, 1);
                return _stateHash(s);
            }

            if (fn == FN_SLL) {
                _setReg(s, rd, (rt << ((insn >> 6) & 31)) & U32_MASK);
            } else if (fn == FN_SRL) {
                _setReg(s, rd, rt >> ((insn >> 6) & 31));
            } else if (fn == FN_SRA) {
                _setReg(s, rd, _sra(rt, (insn >> 6) & 31));
            } else if (fn == FN_SLLV) {
                _setReg(s, rd, (rt << (rs & 31)) & U32_MASK);
            } else if (fn == FN_SRLV) {
                _setReg(s, rd, rt >> (rs & 31));
            } else if (fn == FN_SRAV) {
                _setReg(s, rd, _sra(rt, rs & 31));
            } else if (fn == FN_MOVZ) {
                if (rt == 0) _setReg(s, rd, rs);
            } else if (fn == FN_MOVN) {
                if (rt != 0) _setReg(s, rd, rs);
            } else if (fn == FN_MFHI) {
                _setReg(s, rd, _u32(s, OFFSET_HI));
            } else if (fn == FN_MTHI) {
                _setU32(s, OFFSET_HI, rs);
            } else if (fn == FN_MFLO) {
                _setReg(s, rd, _u32(s, OFFSET_LO));
            } else if (fn == FN_MTLO) {
                _setU32(s, OFFSET_LO, rs);
            } else if (fn == FN_MULT) {
                _setHiLo(s, uint256(_signed(rs) * _signed(rt)));
            } else if (fn == FN_MULTU) {
                _setHiLo(s, rs * rt);
            } else if (fn == FN_DIV) {
                if (rt == 0) return _panic(s);
                int256 a = _signed(rs);
                int256 b = _signed(rt);
                uint256 q;
                uint256 r;
                assembly ("memory-safe") {
                    q := sdiv(a, b)
                    r := smod(a, b)
                }
                _setU32(s, OFFSET_LO, q & U32_MASK);
                _setU32(s, OFFSET_HI, r & U32_MASK);
            } else if (fn == FN_DIVU) {
                if (rt == 0) return _panic(s);
                _setU32(s, OFFSET_LO, rs / rt);
                _setU32(s, OFFSET_HI, rs % rt);
            } else if (fn == FN_ADD || fn == FN_SUB) {
                int256 r = fn == FN_ADD ? _signed(rs) + _signed(rt) : _signed(rs) - _signed(rt);
                if (r != _signed(uint256(r) & U32_MASK)) return _panic(s);
                _setReg(s, rd, uint256(r) & U32_MASK);
            } else if (fn == FN_ADDU) {
                _setReg(s, rd, (rs + rt) & U32_MASK);
            } else if (fn == FN_SUBU) {
                _setReg(s, rd, (rs - rt) & U32_MASK);
            } else if (fn == FN_AND) {
                _setReg(s, rd, rs & rt);
            } else if (fn == FN_OR) {
                _setReg(s, rd, rs | rt);
            } else if (fn == FN_XOR) {
                _setReg(s, rd, rs ^ rt);
            } else if (fn == FN_NOR) {
                _setReg(s, rd, ~(rs | rt) & U32_MASK);
            } else if (fn == FN_SLT) {
                _setReg(s, rd, _signed(rs) < _signed(rt) ? 1 : 0);
            } else if (fn == FN_SLTU) {
                _setReg(s, rd, rs < rt ? 1 : 0);
            } else if (fn == FN_TEQ) {
                if (rs == rt) return _panic(s);
            } else {
                // break (0x0D) and every function field DESIGN does not list.
                return _panic(s);
            }
            return _advance(s);
        }
    }

    /// @dev Opcode 1: bltz bgez bltzal bgezal (the *al forms link whether or not taken).
    function _regimm(uint256 s, uint256 insn) internal pure returns (bytes32) {
        unchecked {
            uint256 rt = (insn >> 16) & 31;
            if (rt != RT_BLTZ && rt != RT_BGEZ && rt != RT_BLTZAL && rt != RT_BGEZAL) return _panic(s);
            if (_inDelaySlot(s)) return _panic(s);
            bool negative = _reg(s, (insn >> 21) & 31) & 0x80000000 != 0;
            // Bit 0 of rt picks bgez* over bltz*, bit 4 the linking forms.
            bool taken = rt & 1 != 0 ? !negative : negative;
            uint256 pc = _u32(s, OFFSET_PC);
            if (rt & 0x10 != 0) _setReg(s, REG_RA, (pc + 8) & U32_MASK);
            return _takeBranch(s, taken, pc + 4 + (_simm(insn) << 2));
        }
    }

    /// @dev Opcodes 2, 3: j, jal within the 256 MiB segment of the delay slot.
    function _jump(uint256 s, uint256 insn) internal pure returns (bytes32) {
        unchecked {
            if (_inDelaySlot(s)) return _panic(s);
            uint256 pc = _u32(s, OFFSET_PC);
            uint256 target = ((pc + 4) & 0xF0000000) | ((insn & 0x03FFFFFF) << 2);
            if (insn >> 26 == OP_JAL) _setReg(s, REG_RA, (pc + 8) & U32_MASK);
            return _takeBranch(s, true, target);
        }
    }

    /// @dev Opcodes 4-7: beq bne blez bgtz.
    function _branch(uint256 s, uint256 insn) internal pure returns (bytes32) {
        unchecked {
            if (_inDelaySlot(s)) return _panic(s);
            uint256 op = insn >> 26;
            uint256 rs = _reg(s, (insn >> 21) & 31);
            bool taken;
            if (op == OP_BEQ) taken = rs == _reg(s, (insn >> 16) & 31);
            else if (op == OP_BNE) taken = rs != _reg(s, (insn >> 16) & 31);
            else if (op == OP_BLEZ) taken = _signed(rs) <= 0;
            else taken = _signed(rs) > 0;
            return _takeBranch(s, taken, _u32(s, OFFSET_PC) + 4 + (_simm(insn) << 2));
        }
    }

    /// @dev Opcodes 8-15: addi addiu slti sltiu (sign-extended), andi ori xori (zero-extended),
    ///      lui. addi panics on signed overflow.
    function _immediate(uint256 s, uint256 insn) internal pure returns (bytes32) {
        unchecked {
            uint256 op = insn >> 26;
            uint256 rt = (insn >> 16) & 31;
            uint256 rs = _reg(s, (insn >> 21) & 31);
            uint256 imm = insn & 0xFFFF;
            uint256 simm = _simm(insn);
            if (op == OP_ADDI) {
                int256 r = _signed(rs) + _signed(simm);
                if (r != _signed(uint256(r) & U32_MASK)) return _panic(s);
                _setReg(s, rt, uint256(r) & U32_MASK);
            } else if (op == OP_ADDIU) {
                _setReg(s, rt, (rs + simm) & U32_MASK);
            } else if (op == OP_SLTI) {
                _setReg(s, rt, _signed(rs) < _signed(simm) ? 1 : 0);
            } else if (op == OP_SLTIU) {
                // The sign-extended immediate compared as unsigned.
                _setReg(s, rt, rs < simm ? 1 : 0);
            } else if (op == OP_ANDI) {
                _setReg(s, rt, rs & imm);
            } else if (op == OP_ORI) {
                _setReg(s, rt, rs | imm);
            } else if (op == OP_XORI) {
                _setReg(s, rt, rs ^ imm);
            } else {
                _setReg(s, rt, imm << 16); // lui
            }
            return _advance(s);
        }
    }

    /// @dev Opcode 0x1C: madd maddu mul msub msubu clz clo. madd & co. treat HI:LO as one
    ///      wrapping 64-bit accumulator; `mul` leaves HI/LO unchanged.
    function _special2(uint256 s, uint256 insn) internal pure returns (bytes32) {
        unchecked {
            uint256 fn = insn & 0x3F;
            uint256 rd = (insn >> 11) & 31;
            uint256 rs = _reg(s, (insn >> 21) & 31);
            uint256 rt = _reg(s, (insn >> 16) & 31);
            if (fn == FN2_MADD || fn == FN2_MADDU || fn == FN2_MSUB || fn == FN2_MSUBU) {
                uint256 product = fn == FN2_MADD || fn == FN2_MSUB ? uint256(_signed(rs) * _signed(rt)) : rs * rt;
                uint256 acc = (_u32(s, OFFSET_HI) << 32) | _u32(s, OFFSET_LO);
                // Bit 2 of the function field picks msub* over madd*.
                _setHiLo(s, fn & 0x04 != 0 ? acc - product : acc + product);
            } else if (fn == FN2_MUL) {
                _setReg(s, rd, (rs * rt) & U32_MASK);
            } else if (fn == FN2_CLZ) {
                _setReg(s, rd, _clz32(rs));
            } else if (fn == FN2_CLO) {
                _setReg(s, rd, _clz32(~rs & U32_MASK));
            } else {
                return _panic(s);
            }
            return _advance(s);
        }
    }

    /// @dev lb lh lwl lw lbu lhu lwr, each from the aligned word that holds the address, proved
    ///      by the step proof's second memory proof. lh/lhu at an odd address and lw at one not
    ///      a multiple of 4 panic before any proof is read.
    function _load(uint256 s, uint256 insn, bytes calldata proof) internal pure returns (bytes32) {
        unchecked {
            uint256 op = insn >> 26;
            uint256 rt = (insn >> 16) & 31;
            uint256 addr = (_reg(s, (insn >> 21) & 31) + _simm(insn)) & U32_MASK;
            if (((op == OP_LH || op == OP_LHU) && addr & 1 != 0) || (op == OP_LW && addr & 3 != 0)) {
                return _panic(s);
            }
            uint256 word = MemoryProof.readWord(_memRoot(s), addr & ~uint256(3), _memoryProof(proof, 1));
            // Big-endian: byte 0 is the word's most significant, so byte b sits 8 × b bits down.
            uint256 b8 = (addr & 3) << 3;
            if (op == OP_LB) {
                _setReg(s, rt, _signExtend8((word >> (24 - b8)) & 0xFF));
            } else if (op == OP_LBU) {
                _setReg(s, rt, (word >> (24 - b8)) & 0xFF);
            } else if (op == OP_LH) {
                _setReg(s, rt, _signExtend16((word >> (16 - b8)) & 0xFFFF));
            } else if (op == OP_LHU) {
                _setReg(s, rt, (word >> (16 - b8)) & 0xFFFF);
            } else if (op == OP_LW) {
                _setReg(s, rt, word);
            } else if (op == OP_LWL) {
                // Bytes addr..end of word into the high end of rt.
                uint256 keep = (uint256(1) << b8) - 1;
                _setReg(s, rt, ((word << b8) & U32_MASK) | (_reg(s, rt) & keep));
            } else {
                // lwr: bytes start of word..addr into the low end of rt.
                uint256 shift = 24 - b8;
                _setReg(s, rt, (word >> shift) | (_reg(s, rt) & ~(U32_MASK >> shift) & U32_MASK));
            }
            return _advance(s);
        }
    }

    /// @dev sb sh swl sw swr: merge into the aligned word that holds the address, write it back.
    ///      The old word comes from the second memory proof's leaf unchecked; writeWord then
    ///      checks that same leaf against the memory root while it computes the new root, so one
    ///      pass over the siblings does both.
    function _store(uint256 s, uint256 insn, bytes calldata proof) internal pure returns (bytes32) {
        unchecked {
            uint256 op = insn >> 26;
            uint256 t = _reg(s, (insn >> 16) & 31);
            uint256 addr = (_reg(s, (insn >> 21) & 31) + _simm(insn)) & U32_MASK;
            if ((op == OP_SH && addr & 1 != 0) || (op == OP_SW && addr & 3 != 0)) return _panic(s);
            uint256 aligned = addr & ~uint256(3);
            bytes calldata wordProof = _memoryProof(proof, 1);
            uint256 word = MemoryProof.wordOfLeaf(aligned, wordProof);
            uint256 b8 = (addr & 3) << 3;
            if (op == OP_SB) {
                uint256 shift = 24 - b8;
                word = (word & ~(uint256(0xFF) << shift)) | ((t & 0xFF) << shift);
            } else if (op == OP_SH) {
                uint256 shift = 16 - b8;
                word = (word & ~(uint256(0xFFFF) << shift)) | ((t & 0xFFFF) << shift);
            } else if (op == OP_SW) {
                word = t;
            } else if (op == OP_SWL) {
                // The high bytes of rt into addr..end of word.
                word = (word & ~(U32_MASK >> b8)) | (t >> b8);
            } else {
                // swr: the low bytes of rt into start of word..addr.
                uint256 shift = 24 - b8;
                word = (t << shift) | (word & ((uint256(1) << shift) - 1));
            }
            _setMemRoot(s, MemoryProof.writeWord(_memRoot(s), aligned, word & U32_MASK, wordProof));
            return _advance(s);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Endings of a step, as in vm/step.py (which also counts the step in each; see `step`)
    // ---------------------------------------------------------------------------------------

    /// @dev A panic: exited with exit code 0xFF. The step counter was already advanced and no
    ///      other field has been touched: every panic is decided before anything is written.
    function _panic(uint256 s) internal pure returns (bytes32) {
        _setU8(s, OFFSET_EXIT_CODE, PANIC_EXIT_CODE);
        _setU8(s, OFFSET_EXITED, 1);
        return _stateHash(s);
    }

    /// @dev Finish a non-branch instruction: move to the next one (possibly a branch target).
    function _advance(uint256 s) internal pure returns (bytes32) {
        unchecked {
            uint256 nextPC = _u32(s, OFFSET_NEXT_PC);
            _setPCs(s, nextPC, (nextPC + 4) & U32_MASK);
            return _stateHash(s);
        }
    }

    function _inDelaySlot(uint256 s) internal pure returns (bool) {
        unchecked {
            return _u32(s, OFFSET_NEXT_PC) != (_u32(s, OFFSET_PC) + 4) & U32_MASK;
        }
    }

    /// @dev Finish a branch or jump: the delay slot (old nextPC) runs next, then target or on.
    function _takeBranch(uint256 s, bool taken, uint256 target) internal pure returns (bytes32) {
        unchecked {
            uint256 nextPC = _u32(s, OFFSET_NEXT_PC);
            _setPCs(s, nextPC, taken ? target & U32_MASK : (nextPC + 4) & U32_MASK);
            return _stateHash(s);
        }
    }

    /// @dev keccak256 of the packed state, top byte replaced by the status.
    function _stateHash(uint256 s) internal pure returns (bytes32) {
        return VMState.hashAt(s);
    }

    // ---------------------------------------------------------------------------------------
    // Packed state access. `s` points at the state copied to memory; fields are big-endian.
    // ---------------------------------------------------------------------------------------

    /// @dev Copies the state into fresh memory. 32 spare bytes after it keep the 32-byte
    ///      read-modify-writes of the last register inside the allocation.
    function _loadState(bytes calldata state) internal pure returns (uint256 s) {
        uint256 length = STATE_LENGTH; // inline assembly cannot name another contract's constant
        assembly ("memory-safe") {
            s := mload(0x40)
            calldatacopy(s, state.offset, length)
            mstore(0x40, add(s, add(length, 32)))
        }
    }

    function _memoryProof(bytes calldata proof, uint256 index) internal pure returns (bytes calldata) {
        unchecked {
            uint256 end = (index + 1) * MEMORY_PROOF_LENGTH;
            // A step proof shorter than the memory proofs this step reads.
            if (proof.length < end) revert MemoryProof.InvalidProofLength(proof.length, end);
            return proof[index * MEMORY_PROOF_LENGTH:end];
        }
    }

    function _memRoot(uint256 s) internal pure returns (bytes32 root) {
        assembly ("memory-safe") {
            root := mload(s) // OFFSET_MEM_ROOT = 0
        }
    }

    function _setMemRoot(uint256 s, bytes32 root) internal pure {
        assembly ("memory-safe") {
            mstore(s, root) // OFFSET_MEM_ROOT = 0
        }
    }

    function _u8(uint256 s, uint256 offset) internal pure returns (uint256 v) {
        assembly ("memory-safe") {
            v := byte(0, mload(add(s, offset)))
        }
    }

    function _setU8(uint256 s, uint256 offset, uint256 v) internal pure {
        assembly ("memory-safe") {
            mstore8(add(s, offset), v)
        }
    }

    function _u32(uint256 s, uint256 offset) internal pure returns (uint256 v) {
        assembly ("memory-safe") {
            v := shr(224, mload(add(s, offset)))
        }
    }

    /// @dev `v` must fit in 32 bits; the 28 bytes after the field are written back unchanged.
    function _setU32(uint256 s, uint256 offset, uint256 v) internal pure {
        assembly ("memory-safe") {
            let p := add(s, offset)
            mstore(p, or(shr(32, shl(32, mload(p))), shl(224, v)))
        }
    }

    function _u64(uint256 s, uint256 offset) internal pure returns (uint256 v) {
        assembly ("memory-safe") {
            v := shr(192, mload(add(s, offset)))
        }
    }

    function _setU64(uint256 s, uint256 offset, uint256 v) internal pure {
        assembly ("memory-safe") {
            let p := add(s, offset)
            mstore(p, or(shr(64, shl(64, mload(p))), shl(192, v)))
        }
    }

    function _reg(uint256 s, uint256 index) internal pure returns (uint256) {
        return _u32(s, OFFSET_REGISTERS + (index << 2));
    }

    /// @dev Writes to $zero are dropped, which also serves "no link register" (index 0).
    function _setReg(uint256 s, uint256 index, uint256 v) internal pure {
        if (index != 0) _setU32(s, OFFSET_REGISTERS + (index << 2), v);
    }

    function _setPCs(uint256 s, uint256 pc, uint256 nextPC) internal pure {
        _setU32(s, OFFSET_PC, pc);
        _setU32(s, OFFSET_NEXT_PC, nextPC);
    }

    /// @dev HI:LO from the low 64 bits of `acc`.
    function _setHiLo(uint256 s, uint256 acc) internal pure {
        _setU32(s, OFFSET_LO, acc & U32_MASK);
        _setU32(s, OFFSET_HI, (acc >> 32) & U32_MASK);
    }

    // ---------------------------------------------------------------------------------------
    // 32-bit arithmetic helpers
    // ---------------------------------------------------------------------------------------

    /// @dev A 32-bit register value read as a signed integer.
    function _signed(uint256 v) internal pure returns (int256 r) {
        assembly ("memory-safe") {
            r := signextend(3, v)
        }
    }

    /// @dev The instruction's 16-bit immediate, sign-extended to 32 bits.
    function _simm(uint256 insn) internal pure returns (uint256) {
        return _signExtend16(insn & 0xFFFF);
    }

    function _signExtend8(uint256 v) internal pure returns (uint256 r) {
        assembly ("memory-safe") {
            r := and(signextend(0, v), 0xFFFFFFFF)
        }
    }

    function _signExtend16(uint256 v) internal pure returns (uint256 r) {
        assembly ("memory-safe") {
            r := and(signextend(1, v), 0xFFFFFFFF)
        }
    }

    function _sra(uint256 v, uint256 shamt) internal pure returns (uint256 r) {
        assembly ("memory-safe") {
            r := and(sar(shamt, signextend(3, v)), 0xFFFFFFFF)
        }
    }

    /// @dev Leading zeros of a 32-bit value (32 for zero), by binary search.
    function _clz32(uint256 v) internal pure returns (uint256 n) {
        if (v == 0) return 32;
        if (v >> 16 == 0) {
            n += 16;
            v <<= 16;
        }
        if (v >> 24 == 0) {
            n += 8;
            v <<= 8;
        }
        if (v >> 28 == 0) {
            n += 4;
            v <<= 4;
        }
        if (v >> 30 == 0) {
            n += 2;
            v <<= 2;
        }
        if (v >> 31 == 0) n += 1;
    }
}
