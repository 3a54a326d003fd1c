// Reads one JSON list of layer stacks per line on stdin and answers, per line, the calculator's
// per-layer geometry for each stack (used by test_calculator.py to compare with fcnlib).
import { createInterface } from "node:readline";
import { geometry, LIMITS } from "../fcnlib/static/receptive_calculator.js";

console.log(JSON.stringify(LIMITS));
for await (const line of createInterface({ input: process.stdin })) {
  console.log(JSON.stringify(JSON.parse(line).map(geometry)));
}
