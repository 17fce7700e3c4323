// Runs an ONNX model with onnxruntime-node and compares its first output with expected logits.
//
// usage: node ort_check.js ORT_MODULE_DIR MODEL.onnx INPUT.bin N,C,H,W EXPECTED.bin [RTOL [all]]
// INPUT.bin and EXPECTED.bin are raw little-endian float32 (as tests/export/logits.c writes them).
// Passes when max|ort - expected| <= RTOL * max|expected| (RTOL default 1e-4: both sides compute in
// float32 with different summation orders); prints the max abs diff and the share of
// samples whose arg-max class agrees; with `all`, every sample's arg-max must agree too (so both
// runtimes give the same accuracy). Exit code 0 on pass, 1 on a mismatch, 2 on an error.
'use strict';
const fs = require('fs');

function floats(path) {
  const b = fs.readFileSync(path);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

async function main() {
  const [modDir, model, inputPath, shapeStr, expectedPath, rtolStr, allStr] = process.argv.slice(2);
  if (!expectedPath) throw new Error('usage: node ort_check.js ORT_MODULE_DIR MODEL.onnx INPUT.bin N,C,H,W EXPECTED.bin [RTOL]');
  const ort = require(modDir);
  const rtol = rtolStr ? Number(rtolStr) : 1e-4;
  const shape = shapeStr.split(',').map(Number);
  const x = floats(inputPath), want = floats(expectedPath);
  if (x.length !== shape.reduce((a, b) => a * b, 1)) throw new Error(`${inputPath} holds ${x.length} floats, not ${shapeStr}`);
  const session = await ort.InferenceSession.create(model);
  const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, shape) });
  const got = out[session.outputNames[0]].data;
  if (got.length !== want.length) throw new Error(`onnxruntime gave ${got.length} values, expected ${want.length}`);
  const n = shape[0], classes = want.length / n;
  let maxd = 0, scale = 0, agree = 0;
  for (let i = 0; i < want.length; i++) {
    maxd = Math.max(maxd, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  for (let s = 0; s < n; s++) {
    let a = 0, b = 0;
    for (let c = 1; c < classes; c++) {
      if (got[s * classes + c] > got[s * classes + a]) a = c;
      if (want[s * classes + c] > want[s * classes + b]) b = c;
    }
    agree += a === b;
  }
  const tol = rtol * Math.max(scale, 1e-6);
  console.log(`${model}: onnxruntime vs swatc logits [${n},${classes}]: max abs diff ${maxd.toExponential(3)} ` +
              `(scale ${scale.toFixed(3)}, tol ${tol.toExponential(1)}), arg-max agrees on ${agree}/${n}`);
  process.exit(maxd <= tol && (allStr !== 'all' || agree === n) ? 0 : 1);
}

main().catch((err) => { console.error(`ort_check: ${err.message}`); process.exit(2); });
