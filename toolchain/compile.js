#!/usr/bin/env node
// Compiles contracts/src/*.sol (and the test harnesses in contracts/test/*.sol) with the pinned
// npm `solc`, through its standard-JSON interface, into contracts/artifacts/<Name>.json.
//
// Usage: node toolchain/compile.js [--out DIR]
//
// The output is deterministic (sorted keys, two-space indent, trailing newline, no metadata
// hash in the bytecode) so that a test can recompile into a temporary directory and demand
// byte-identical files: the committed artifacts are what users deploy without Node or solc.
"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

const ROOT = path.resolve(__dirname, "..");
const CONTRACTS = path.join(ROOT, "contracts");
const SOURCE_DIRS = ["src", "test"];

// Settings are part of the artifacts' identity: changing any of them changes the bytecode.
const SETTINGS = {
  // cancun: the newest fork that py-evm, anvil and today's L1/L2s all run; nothing here needs
  // prague or osaka opcodes.
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 1000000 },
  viaIR: true,
  // The CBOR metadata hash would change the bytecode on any comment edit; the artifacts should
  // change only when the code does.
  metadata: { bytecodeHash: "none", appendCBOR: false },
  outputSelection: {
    "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
  },
};

function parseArgs(argv) {
  let out = path.join(CONTRACTS, "artifacts");
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--out" && i + 1 < argv.length) {
      out = path.resolve(argv[++i]);
    } else {
      process.stderr.write(`usage: node toolchain/compile.js [--out DIR]\n`);
      process.exit(2);
    }
  }
  return { out };
}

function collectSources() {
  const sources = {};
  for (const dir of SOURCE_DIRS) {
    const abs = path.join(CONTRACTS, dir);
    if (!fs.existsSync(abs)) continue;
    for (const name of fs.readdirSync(abs).sort()) {
      if (!name.endsWith(".sol")) continue;
      sources[`${dir}/${name}`] = { content: fs.readFileSync(path.join(abs, name), "utf8") };
    }
  }
  return sources;
}

// Imports are relative ("./MemoryProof.sol"); solc resolves them against the importing unit's
// name, so every file it can ask for is already among the sources.
function findImport(importPath) {
  const abs = path.join(CONTRACTS, importPath);
  if (fs.existsSync(abs)) return { contents: fs.readFileSync(abs, "utf8") };
  return { error: `not found: ${importPath}` };
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value).sort()) out[key] = sortKeys(value[key]);
    return out;
  }
  return value;
}

function main() {
  const { out } = parseArgs(process.argv.slice(2));
  const input = { language: "Solidity", sources: collectSources(), settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));

  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) process.stderr.write(`${e.formattedMessage || e.message}\n`);
  if (errors.length > 0) process.exit(1);

  fs.mkdirSync(out, { recursive: true });
  const written = [];
  for (const sourceName of Object.keys(output.contracts).sort()) {
    for (const [name, contract] of Object.entries(output.contracts[sourceName])) {
      const bytecode = contract.evm.bytecode.object;
      // A library of internal functions only (MemoryProof) is compiled into its users.
      if (!contract.abi.some((item) => item.type === "function")) continue;
      // An abstract contract (DisputeGame, inherited by TaskRegistry) has nothing to deploy; its
      // ABI is part of the deployable contract's.
      if (bytecode === "") continue;
      const artifact = sortKeys({
        contractName: name,
        sourceName: `contracts/${sourceName}`,
        compiler: { name: "solc", version: solc.version(), settings: { ...SETTINGS, outputSelection: undefined } },
        abi: contract.abi,
        bytecode: `0x${bytecode}`,
        deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
      });
      const file = path.join(out, `${name}.json`);
      fs.writeFileSync(file, `${JSON.stringify(artifact, null, 2)}\n`);
      written.push(file);
    }
  }
  process.stdout.write(`${written.map((f) => path.relative(process.cwd(), f)).join("\n")}\n`);
}

main();
