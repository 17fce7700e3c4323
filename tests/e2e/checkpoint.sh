#!/usr/bin/env bash
# End-to-end tests of training checkpoints: resuming gives bit-identical weights and metrics (after a
# whole epoch, in the middle of one, after a real SIGTERM; with the model named or taken from the
# checkpoint, and with the resume command swatc prints), kill -9 never leaves an unreadable
# checkpoint, and damaged or mismatched checkpoints are refused with exit 2 and a clear message.
# Usage: checkpoint.sh SWATC_BINARY
set -u
. "$(dirname "$0")/lib.sh" "$1"
cd "$tmp" || exit 1
state() { "$swatc" inspect "$1" | grep -E '^(tensor|momentum|meta step=|meta epoch=|meta test_acc=)'; }
same_run() { # name a.ckpt a.jsonl b.ckpt b.jsonl
  if [ -s "$3" ] && cmp -s <(state "$2") <(state "$4") && cmp -s <(strip_timing "$3") <(strip_timing "$5"); then
    ok "$1: identical weights, momentum, counters and $(wc -l < "$3") metrics lines"
  else
    bad "$1: $(diff <(state "$2") <(state "$4") | head -3) $(diff <(strip_timing "$3") <(strip_timing "$5") | head -2)"
  fi
}
lenet="$models/lenet5.onnx"
small=(--limit-train 2000 --limit-test 500 --threads 2 -q)
# runs the resume command printed in FILE ("resume with: swatc train ...") with this swatc
run_printed() { local cmd; cmd=$(sed -n 's/.*resume with: swatc //p' "$1"); eval "\"\$swatc\" $cmd"; }

# 1. Whole epochs: 1 epoch, then --resume with --epochs 2 == 2 epochs in one go (a constant rate:
#    the cosine schedule depends on --epochs, so a 1-epoch run anneals differently)
"$swatc" train "$lenet" "${small[@]}" --schedule constant --lr 0.02 --epochs 2 --checkpoint a.ckpt --metrics a.jsonl
"$swatc" train "$lenet" "${small[@]}" --schedule constant --lr 0.02 --epochs 1 --checkpoint b.ckpt --metrics b.jsonl
"$swatc" train "$lenet" "${small[@]}" --schedule constant --lr 0.02 --epochs 2 --resume b.ckpt --metrics b.jsonl
same_run "1 epoch + resume to 2 == 2 epochs" a.ckpt a.jsonl b.ckpt b.jsonl

# 2. Mid-epoch, deterministically (--stop-after-steps acts as SIGTERM after that step): dense with the
#    cosine schedule, and SWAT-M (per-step budgets, Top-K thresholds between exact selections)
for cfg in "dense:21" "swatm:23:--sparsity 0.9 --momentum-budget --topk-period 7"; do
  IFS=: read -r name stop extra <<< "$cfg"
  # shellcheck disable=SC2086
  "$swatc" train "$lenet" "${small[@]}" --epochs 3 $extra --checkpoint "f-$name.ckpt" --metrics f.jsonl
  # shellcheck disable=SC2086
  "$swatc" train "$lenet" "${small[@]}" --epochs 3 $extra --checkpoint s.ckpt --metrics s.jsonl --stop-after-steps "$stop" 2> s.err
  rc=$?
  if [ $rc -eq 143 ] && grep -q "interrupted: checkpoint written to s.ckpt (epoch 2, step $stop); resume with: swatc train --resume s.ckpt --limit-train 2000 " s.err \
     && ! grep -q "resume with: .*\(lenet5\|--checkpoint\|--stop-after-steps\)" s.err; then
    ok "$name: stop after step $stop exits 143 and prints the resume command (no model, --checkpoint or --stop-after-steps)"
  else
    bad "$name: stop exit $rc: $(cat s.err)"
  fi
  cp s.ckpt "mid-$name.ckpt"
  cp s.ckpt s2.ckpt
  cp s.jsonl s2.jsonl
  # resumed as printed (the model from the checkpoint), and with the model named (checked against its hash)
  run_printed s.err
  same_run "$name: resumed mid-epoch with the printed command == uninterrupted" "f-$name.ckpt" f.jsonl s.ckpt s.jsonl
  # shellcheck disable=SC2086
  "$swatc" train "$lenet" "${small[@]}" --epochs 3 $extra --resume s2.ckpt --metrics s2.jsonl
  same_run "$name: resumed mid-epoch with the model named == uninterrupted" "f-$name.ckpt" f.jsonl s2.ckpt s2.jsonl
done

# The printed command quotes what a shell would split, and a resume needs no model path
"$swatc" train "$lenet" --limit-train 512 --limit-test 64 --batch 64 --threads 2 -q --epochs 1 --metrics "q r.jsonl" \
  --checkpoint "it's here.ckpt" --stop-after-steps 3 2> q.err
rc=$?
if [ $rc -eq 143 ] && grep -qF "resume with: swatc train --resume 'it'\''s here.ckpt' " q.err \
   && grep -qF -- "--metrics 'q r.jsonl'" q.err && run_printed q.err \
   && [ "$("$swatc" inspect "it's here.ckpt" | sed -n 's/^meta finished=//p')" = 1 ]; then
  ok "a resume command with quoted paths runs to the end"
else
  bad "quoted resume command: exit $rc: $(cat q.err)"
fi
expect "train without a model or --resume" 1 "train needs a model file" "$swatc" train --epochs 1

# 3. Resuming a finished run says so and trains nothing
"$swatc" train "$lenet" "${small[@]}" --epochs 3 --resume f-dense.ckpt > fin.out 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "holds a finished run (3 of 3 epochs" fin.out && grep -q "hint: pass --epochs" fin.out; then
  ok "resuming a finished run: a message, exit 0"
else
  bad "resuming a finished run: exit $rc: $(cat fin.out)"
fi

# 4. A real SIGTERM in the middle of a longer run, then resume: same as uninterrupted
long=(--limit-train 12000 --limit-test 500 --threads 2 -q --epochs 2)
"$swatc" train "$lenet" "${long[@]}" --checkpoint L.ckpt --metrics L.jsonl
"$swatc" train "$lenet" "${long[@]}" --checkpoint T.ckpt --metrics T.jsonl 2> T.err &
pid=$!
# once the first epoch's metrics line is out, the run is in epoch 2 (a fixed sleep raced with start-up
# on a loaded machine: the signal came before the handler was installed)
for _ in $(seq 600); do [ -s T.jsonl ] && break; kill -0 $pid 2> /dev/null || break; sleep 0.1; done
kill -TERM $pid
wait $pid
rc=$?
if [ $rc -eq 143 ] && grep -q "interrupted: checkpoint written to T.ckpt" T.err; then
  run_printed T.err
  same_run "SIGTERM at $(sed -n 's/.*(\(epoch [0-9]*, step [0-9]*\)).*/\1/p' T.err), resumed == uninterrupted" L.ckpt L.jsonl T.ckpt T.jsonl
elif [ $rc -eq 0 ]; then
  ok "SIGTERM arrived after the run finished (machine too fast to interrupt it)"
else
  bad "SIGTERM: exit $rc: $(cat T.err)"
fi

# 5. kill -9 at random moments of a run that checkpoints every few milliseconds: the checkpoint always reads
tiny=(--limit-train 256 --limit-test 64 --batch 64 --threads 2 -q --epochs 100000)
broken=0
for i in 1 2 3 4 5 6; do
  "$swatc" train "$lenet" "${tiny[@]}" --checkpoint K.ckpt > /dev/null 2>&1 &
  pid=$!
  sleep "$((RANDOM % 2)).$((RANDOM % 10))$((RANDOM % 10))"
  [ -e K.ckpt ] || sleep 1
  kill -9 $pid
  wait $pid 2> /dev/null
  if [ -e K.ckpt ] && ! "$swatc" export K.ckpt -o K.onnx > K.out 2>&1; then
    broken=$((broken + 1))
    echo "  after kill $i: $(cat K.out)"
  fi
done
leftovers=$(find . -name '.K.ckpt.*' | wc -l)
if [ -e K.ckpt ] && [ $broken -eq 0 ]; then
  ok "kill -9 six times: the checkpoint always exports ($leftovers temp files left by the kills)"
else
  bad "kill -9: $broken unreadable checkpoints"
fi
"$swatc" train "$lenet" "${tiny[@]}" --resume K.ckpt > /dev/null 2>&1 &
pid=$!
sleep 0.5
kill -TERM $pid
wait $pid
rc=$?
if [ $rc -eq 143 ]; then ok "a checkpoint left by kill -9 resumes"; else bad "resume after kill -9: exit $rc"; fi

# 6. Damaged and mismatched checkpoints: exit 2, a message naming what is wrong, a hint
size=$(stat -c %s f-dense.ckpt)
for len in 0 7 100 1000 $((size / 2)) $((size - 29)) $((size - 1)); do
  head -c "$len" f-dense.ckpt > cut.ckpt
  want="truncated"
  [ "$len" -ge 8 ] || want="not a swatc checkpoint"
  expect "truncated to $len bytes" 2 "$want" "$swatc" train "$lenet" "${small[@]}" --epochs 3 --resume cut.ckpt
done
cp f-dense.ckpt flip.ckpt
printf '\xff' | dd of=flip.ckpt bs=1 seek=$((size / 2)) conv=notrunc 2> /dev/null
expect "a flipped byte" 2 "checksum mismatch in section" "$swatc" train "$lenet" "${small[@]}" --epochs 3 --resume flip.ckpt
expect "a flipped byte (export)" 2 "checksum mismatch" "$swatc" export flip.ckpt -o y.onnx
expect "a model instead of a checkpoint" 2 "not a swatc checkpoint" "$swatc" train "$lenet" "${small[@]}" --resume "$lenet"
expect "a missing checkpoint" 2 "cannot open" "$swatc" train "$lenet" "${small[@]}" --resume nothing.ckpt
expect "another model" 2 "made from another model" "$swatc" train "$models/mlp.onnx" "${small[@]}" --epochs 3 --resume f-dense.ckpt
expect "other options" 2 "checkpoint was trained with --sparsity 0, this run asks for 0.8" \
  "$swatc" train "$lenet" "${small[@]}" --epochs 3 --resume f-dense.ckpt --sparsity 0.8
expect "other options (two at once)" 2 "trained with --batch 128, this run asks for 64" \
  "$swatc" train "$lenet" "${small[@]}" --epochs 3 --resume f-dense.ckpt --batch 64 --lr 0.1
expect "a mid-epoch checkpoint beyond --epochs" 2 "in the middle of epoch 2, beyond --epochs 1" \
  "$swatc" train "$lenet" "${small[@]}" --epochs 1 --resume mid-dense.ckpt

# 7. NaN loss: exit 5 naming the step; the last good checkpoint stays as it was
"$swatc" train "$lenet" --epochs 1 --limit-train 2000 --limit-test 100 --threads 2 -q --lr 0.01 --checkpoint nan.ckpt
cp nan.ckpt nan.before
expect "NaN loss names the step" 5 "NaN.*step [0-9]" "$swatc" train "$lenet" --epochs 3 --limit-train 2000 --limit-test 100 --threads 2 -q \
  --lr 90 --checkpoint nan.ckpt
if cmp -s nan.ckpt nan.before; then ok "the last good checkpoint is kept after NaN"; else bad "NaN overwrote the checkpoint"; fi

report
