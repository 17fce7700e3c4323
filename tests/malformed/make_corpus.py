#!/usr/bin/python3
"""Writes the malformed-model corpus for swatc's importer tests.

Run with Debian's interpreter (onnx 1.12, numpy):

    /usr/bin/python3 tests/malformed/make_corpus.py

It rewrites tests/malformed/corpus/ from scratch, tests/malformed/outside.bin (the bait file that
the path-traversal cases point at) and tests/malformed/MANIFEST, a TSV read by run.sh:

    file <TAB> expected_exit <TAB> keyword <TAB> description

keyword is matched case-insensitively against the error message (from the "swatc: error:" line on).
"a|b" accepts either word; "a&b" requires both; "-" means no check (exit 0 cases).

Every case starts from one small valid model (a conv net built with onnx.helper, opset 13) and
breaks exactly one thing. The output is deterministic: fixed seeds, no timestamps, sorted rows.
"""

import gzip
import io
import os
import random
import shutil
import struct
import sys
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
MANIFEST = os.path.join(HERE, "MANIFEST")
OUTSIDE = os.path.join(HERE, "outside.bin")
MAX_FILE = 64 * 1024

ROWS = []  # (file, expected_exit, keyword, description)


# ---------------------------------------------------------------------------------------------
# The valid base model: input[1,1,8,8] -> Conv 3x3 (4 ch, pad 1) -> Relu -> MaxPool 2x2
#                       -> Flatten -> Gemm (transB=1) -> output[1,10]
# ---------------------------------------------------------------------------------------------

def weights():
    """The base model's parameters, as numpy arrays (fixed seed)."""
    rng = np.random.RandomState(20240601)
    return {
        "conv1.weight": (rng.standard_normal((4, 1, 3, 3)) * 0.3).astype(np.float32),
        "conv1.bias": (rng.standard_normal((4,)) * 0.1).astype(np.float32),
        "fc.weight": (rng.standard_normal((10, 64)) * 0.1).astype(np.float32),
        "fc.bias": (rng.standard_normal((10,)) * 0.1).astype(np.float32),
    }


def base_nodes():
    """The base model's nodes, in topological order."""
    return [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1"], name="Conv_0",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="Relu_1"),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], name="MaxPool_2",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool1"], ["flat"], name="Flatten_3", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["output"], name="Gemm_4",
                         alpha=1.0, beta=1.0, transB=1),
    ]


def base_inits():
    """The base model's initializers as raw_data TensorProtos (what PyTorch writes)."""
    return [numpy_helper.from_array(a, name) for name, a in weights().items()]


def f32_input(name="input", shape=(1, 1, 8, 8), elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, list(shape))


def f32_output(name="output", shape=(1, 10)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def make(nodes=None, inits=None, inputs=None, outputs=None, opset=13, ir=8, opsets=None,
         name="tiny_cnn"):
    """Builds a ModelProto; every argument left out comes from the base model."""
    graph = helper.make_graph(
        base_nodes() if nodes is None else nodes,
        name,
        [f32_input()] if inputs is None else inputs,
        [f32_output()] if outputs is None else outputs,
        base_inits() if inits is None else inits,
    )
    if opsets is None:
        opsets = [helper.make_opsetid("", opset)]
    m = helper.make_model(graph, opset_imports=opsets, producer_name="swatc-malformed-corpus")
    m.ir_version = ir
    return m


def replace_init(name, tensor):
    """Base initializers with the one called name replaced by tensor."""
    return [tensor if t.name == name else t for t in base_inits()]


def replace_node(index, node):
    nodes = base_nodes()
    nodes[index] = node
    return nodes


def check_valid(m, what):
    """Asserts that onnx's own checker (with strict shape inference) accepts m (model or path)."""
    try:
        onnx.checker.check_model(m, full_check=True)
    except Exception as ex:  # the checker raises several exception types
        sys.exit(f"make_corpus: case {what} should be valid ONNX but the checker says: {ex}")


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

def add(fname, payload, code, keyword, desc, valid_onnx=False):
    """Writes one corpus file (bytes or ModelProto) and records its MANIFEST row."""
    assert "\t" not in desc and "\n" not in desc and keyword == keyword.lower()
    path = os.path.join(CORPUS, fname)
    model = payload if isinstance(payload, onnx.ModelProto) else None
    if model is not None:
        payload = model.SerializeToString()
    assert len(payload) < MAX_FILE, f"{fname} is {len(payload)} bytes"
    with open(path, "wb") as f:
        f.write(payload)
    if valid_onnx:
        check_valid(path, fname)  # by path, so external data resolves beside the file
    ROWS.append((fname, code, keyword, desc))


def write_side_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------------
# Raw protobuf wire-format helpers (for edits onnx.helper refuses to make)
# ---------------------------------------------------------------------------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, wire, payload):
    """One wire-format field: wire 0 takes an int, wire 2 takes bytes."""
    tag = varint((num << 3) | wire)
    if wire == 0:
        return tag + varint(payload)
    if wire == 2:
        return tag + varint(len(payload)) + payload
    raise ValueError(wire)


def top_level_fields(buf):
    """Yields (field_number, wire_type, start, value_start, end) for each top-level field."""
    pos = 0
    while pos < len(buf):
        start = pos
        tag, pos = read_varint(buf, pos)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = read_varint(buf, pos)
            yield num, wire, start, None, pos
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            yield num, wire, start, pos, pos + n
            pos += n
        else:
            raise ValueError(f"unexpected wire type {wire}")


def read_varint(buf, pos):
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------

def file_level_cases(valid_bytes):
    add("empty.onnx", b"", 2, "empty", "zero-byte file")
    for seed, size in ((1, 64), (2, 1000), (3, 4096), (4, 17)):
        data = random.Random(seed).randbytes(size)
        add(f"random_seed{seed}.onnx", data, 2, "not an onnx|not a valid onnx",
            f"{size} random bytes (seed {seed}); protobuf parsing fails")
    for pct in (10, 50, 99):
        cut = len(valid_bytes) * pct // 100
        add(f"truncated_{pct}.onnx", valid_bytes[:cut], 2, "truncated|not an onnx|not a valid onnx",
            f"valid base model cut after {cut} of {len(valid_bytes)} bytes ({pct}%)")
    add("truncated_1byte.onnx", valid_bytes[:-1], 2, "truncated|not an onnx|not a valid onnx",
        "valid base model minus its last byte")
    add("text.onnx",
        b"This is not a model.\nIt is a plain text file that happens to end in .onnx.\n", 2,
        "not an onnx|not a valid onnx|text", "plain ASCII text")
    add("text_format.onnx", str(make()).encode(), 2, "not an onnx|not a valid onnx|text",
        "the base model in protobuf TEXT format (what print(model) shows), not binary")
    add("gzip.onnx", gzip.compress(valid_bytes, mtime=0), 2, "gzip|compressed|not an onnx",
        "the valid base model gzip-compressed (the importer should not decompress it)")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        info = zipfile.ZipInfo("archive/data.pkl", date_time=(2020, 1, 1, 0, 0, 0))
        z.writestr(info, b"\x80\x02}q\x00.")
    add("pytorch_zip.onnx", zbuf.getvalue(), 2, "zip|pytorch|not an onnx",
        "a zip archive like a PyTorch .pt checkpoint renamed to .onnx")
    png = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" +
           struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0) + b"\x00\x00\x00\x00" +
           bytes(range(64)))
    add("png_header.onnx", png, 2, "png|image|not an onnx",
        "PNG signature and IHDR chunk (wrong magic)")
    tensor = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), "x")
    add("tensor_pb.onnx", tensor.SerializeToString(), 2, "not an onnx|not a valid onnx|tensor",
        "a TensorProto (test_data_set input_0.pb) instead of a ModelProto")
    # Raw edits of the top-level graph field (ModelProto field 7).
    graph = [f for f in top_level_fields(valid_bytes) if f[0] == 7][0]
    _, _, start, vstart, end = graph
    huge_len = (valid_bytes[:start] + varint((7 << 3) | 2) + varint(2**64 - 1) +
                valid_bytes[vstart:])
    add("graph_length_2e64.onnx", huge_len, 2, "truncated|not an onnx|not a valid onnx",
        "the graph field's length prefix is rewritten to 2^64-1 (10-byte varint)")
    huge_len31 = (valid_bytes[:start] + varint((7 << 3) | 2) + varint(2**31 + 5) +
                  valid_bytes[vstart:])
    add("graph_length_2e31.onnx", huge_len31, 2, "truncated|not an onnx|not a valid onnx",
        "the graph field's length prefix is rewritten to 2^31+5 (past the end, over INT_MAX)")
    wrong_wire = valid_bytes[:start] + varint((7 << 3) | 0) + varint(12345) + valid_bytes[end:]
    add("graph_wrong_wiretype.onnx", wrong_wire, 2, "not an onnx|not a valid onnx|truncated",
        "the graph field (7) is encoded as a varint instead of a length-delimited message")
    overlong = b"\x08" + b"\x88" + b"\x80" * 10 + b"\x00" + valid_bytes[2:]
    assert valid_bytes[0] == 0x08, "ir_version is expected to be the first field"
    add("overlong_varint.onnx", overlong, 2, "not an onnx|not a valid onnx|truncated",
        "ir_version encoded as a 12-byte varint (longer than the 10-byte maximum)")


def model_level_cases():
    m = make()
    m.ClearField("graph")
    add("missing_graph.onnx", m, 2, "no graph|missing graph|graph is missing|has no graph",
        "ModelProto with ir_version and opset_import but no graph")
    add("ir_version_0.onnx", make(ir=0), 2, "ir version|ir_version",
        "ir_version 0 (unset): not a valid IR version")
    add("ir_version_99.onnx", make(ir=99), 2, "ir version|ir_version",
        "ir_version 99: newer than any IR swatc knows; reject rather than guess semantics")
    add("opset_0.onnx", make(opset=0), 2, "opset",
        "default-domain opset version 0 (opsets start at 1)")
    add("opset_99.onnx", make(opset=99), 2, "opset",
        "default-domain opset 99: op semantics unknown; reject, hint to re-export with 11..17")
    add("opset_missing.onnx", make(opsets=[]), 2, "opset",
        "no opset_import at all (IR >= 3 must import the default domain)")
    add("opset_duplicate.onnx",
        make(opsets=[helper.make_opsetid("", 13), helper.make_opsetid("", 11)]), 2,
        "opset|duplicate", "the default domain is imported twice with different versions")


def unsupported_cases():
    # One unsupported op (LSTM) in an otherwise valid model: input [5,1,8] -> LSTM(16) -> Y_h.
    rng = np.random.RandomState(7)
    lstm_inits = [
        numpy_helper.from_array(rng.standard_normal((1, 64, 8)).astype(np.float32), "lstm.W"),
        numpy_helper.from_array(rng.standard_normal((1, 64, 16)).astype(np.float32), "lstm.R"),
    ]
    lstm = helper.make_node("LSTM", ["seq", "lstm.W", "lstm.R"], ["Y", "Y_h"], name="LSTM_0",
                            hidden_size=16)
    m = make([lstm], lstm_inits, [f32_input("seq", (5, 1, 8))],
             [helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, 1, 16])])
    add("unsupported_lstm.onnx", m, 2, "unsupported&lstm",
        "valid ONNX with one LSTM node (not in swatc's op set)", valid_onnx=True)

    nms = helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["selected"], name="NMS_0")
    m = make([nms], [], [f32_input("boxes", (1, 6, 4)), f32_input("scores", (1, 1, 6))],
             [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])])
    add("unsupported_nms.onnx", m, 2, "unsupported&nonmaxsuppression",
        "valid ONNX with one NonMaxSuppression node", valid_onnx=True)

    # Several different unsupported ops around supported ones: the message must list all three.
    nodes = base_nodes()[:4] + [
        helper.make_node("Einsum", ["flat", "flat"], ["sq"], name="Einsum_5", equation="bi,bi->b"),
        helper.make_node("Unsqueeze", ["sq", "axes0"], ["sq1"], name="Unsqueeze_6"),
        helper.make_node("Unsqueeze", ["sq1", "axes0"], ["sq2"], name="Unsqueeze_7"),
        helper.make_node("Concat", ["sq2", "sq2", "sq2", "sq2"], ["boxes"], name="Concat_8",
                         axis=2),
        helper.make_node("Unsqueeze", ["sq1", "axes0"], ["scores"], name="Unsqueeze_9"),
        helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["selected"], name="NMS_10"),
        helper.make_node("LSTM", ["sq2", "lstm.W", "lstm.R"], ["Y", "Y_h"], name="LSTM_11",
                         hidden_size=16),
    ]
    inits = base_inits()[:2] + [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0"),
        numpy_helper.from_array(rng.standard_normal((1, 64, 1)).astype(np.float32), "lstm.W"),
        numpy_helper.from_array(rng.standard_normal((1, 64, 16)).astype(np.float32), "lstm.R"),
    ]
    m = make(nodes, inits, outputs=[
        helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3]),
        helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, 1, 16])])
    add("unsupported_many.onnx", m, 2, "unsupported&einsum&nonmaxsuppression&lstm",
        "three different unsupported ops (Einsum, NonMaxSuppression, LSTM) among supported ones; "
        "all must be reported at once", valid_onnx=True)

    # 300 nodes of the same unsupported op: the report must stay one bounded message.
    n = 300
    nodes = [helper.make_node("Acosh", [f"a{i}"], [f"a{i + 1}"], name=f"Acosh_{i}")
             for i in range(n)]
    m = make(nodes, [], [f32_input("a0", (1, 4))],
             [helper.make_tensor_value_info(f"a{n}", TensorProto.FLOAT, [1, 4])])
    add("unsupported_300_nodes.onnx", m, 2, "unsupported&acosh",
        "a chain of 300 Acosh nodes: one message listing the op (and a count), not 300 lines",
        valid_onnx=True)

    # An unsupported op whose node name tries terminal-escape and fake-message injection.
    evil = "evil\x1b[2J\x1b]0;pwned\x07\nswatc: error: injected line\n  hint: injected"
    nodes = base_nodes()
    nodes[1] = helper.make_node("Softsign", ["conv1"], ["relu1"], name=evil)
    add("unsupported_evil_name.onnx", make(nodes), 2, "unsupported&softsign",
        "unsupported op (Softsign) whose node name holds ESC sequences, BEL and newlines with a "
        "fake 'swatc: error:' line; names must be printed escaped", valid_onnx=True)

    # An unsupported op with a 40000-character node name: messages must truncate safely.
    nodes = base_nodes()
    nodes[1] = helper.make_node("Softsign", ["conv1"], ["relu1"], name="n" * 40000)
    add("unsupported_long_name.onnx", make(nodes), 2, "unsupported",
        "unsupported op (Softsign) with a 40000-character node name", valid_onnx=True)

    nodes = base_nodes()
    nodes[1] = helper.make_node("", ["conv1"], ["relu1"], name="Empty_1")
    add("empty_op_type.onnx", make(nodes), 2, "unsupported|op_type|op type|empty",
        "a node with an empty op_type")

    # Unknown domains: an onnxruntime-optimised model with com.microsoft::FusedConv.
    nodes = base_nodes()
    nodes[0] = helper.make_node("FusedConv", ["input", "conv1.weight", "conv1.bias"], ["conv1"],
                                name="FusedConv_0", domain="com.microsoft", activation="Relu",
                                kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    m = make(nodes, opsets=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    add("unknown_domain.onnx", m, 2, "com.microsoft|domain",
        "node in domain com.microsoft (FusedConv, as onnxruntime's optimiser writes), domain "
        "imported in opset_import")
    nodes = base_nodes()
    nodes[1] = helper.make_node("Relu", ["conv1"], ["relu1"], name="Relu_1", domain="org.example")
    add("undeclared_domain.onnx", make(nodes), 2, "org.example|domain",
        "node in domain org.example which opset_import does not declare")

    # 1000 nested If subgraphs, encoded by hand (no recursion limits in the generator).
    depth = 1000
    inner = (field(11, 2, field(1, 2, b"c")) +   # input c
             field(12, 2, field(1, 2, b"c")))    # output c
    for _ in range(depth):
        attr = field(1, 2, b"then_branch") + field(20, 0, 5) + field(6, 2, inner)
        node = field(1, 2, b"c") + field(2, 2, b"c") + field(4, 2, b"If") + field(5, 2, attr)
        inner = field(1, 2, node) + field(2, 2, b"g") + field(12, 2, field(1, 2, b"c"))
    bool_scalar = field(1, 2, field(1, 0, TensorProto.BOOL))   # TypeProto.tensor_type.elem_type
    graph = (field(1, 2, field(1, 2, b"c") + field(2, 2, b"out") + field(4, 2, b"If") +
                   field(5, 2, field(1, 2, b"then_branch") + field(20, 0, 5) +
                         field(6, 2, inner))) +
             field(2, 2, b"nested") +
             field(11, 2, field(1, 2, b"c") + field(2, 2, bool_scalar)) +
             field(12, 2, field(1, 2, b"out")))
    model = field(1, 0, 8) + field(7, 2, graph) + field(8, 2, field(2, 0, 13))
    add("nested_if_1000.onnx", model, 2, "unsupported|nest|depth",
        "If nodes nested 1000 subgraphs deep (then_branch only): must not overflow the stack")


def graph_structure_cases():
    # Cycle: Add(input, back) -> s; Relu(s) -> back. Every value is defined, but not before use.
    nodes = [
        helper.make_node("Add", ["input", "back"], ["s"], name="Add_0"),
        helper.make_node("Relu", ["s"], ["back"], name="Relu_1"),
        helper.make_node("MaxPool", ["back"], ["pool1"], name="MaxPool_2",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool1"], ["flat"], name="Flatten_3", axis=1),
        helper.make_node("Gemm", ["flat", "fc2.weight"], ["output"], name="Gemm_4", transB=1),
    ]
    inits = [numpy_helper.from_array(np.zeros((10, 16), np.float32), "fc2.weight")]
    add("cycle.onnx", make(nodes, inits), 2, "cycle|cyclic",
        "Add and Relu feed each other (Add_0 reads Relu_1's output)")
    nodes = base_nodes()
    nodes[1] = helper.make_node("Add", ["conv1", "relu1"], ["relu1"], name="Add_1")
    add("self_loop.onnx", make(nodes), 2, "cycle|cyclic|itself",
        "a node that reads its own output (Add(conv1, relu1) -> relu1)")

    nodes = base_nodes()
    nodes[1] = helper.make_node("Relu", ["ghost"], ["relu1"], name="Relu_1")
    add("undefined_input.onnx", make(nodes), 2, "not defined|undefined|unknown",
        "Relu_1 reads 'ghost', which no input, initializer or node defines")

    nodes = base_nodes()
    nodes.insert(2, helper.make_node("Relu", ["conv1"], ["relu1"], name="Relu_1b"))
    add("duplicate_output.onnx", make(nodes), 2, "duplicate|more than once|twice",
        "two nodes (Relu_1, Relu_1b) write the same value 'relu1' (not SSA)")
    nodes = base_nodes()
    nodes[1] = helper.make_node("Relu", ["conv1"], ["input"], name="Relu_1")
    nodes[2] = helper.make_node("MaxPool", ["input"], ["pool1"], name="MaxPool_2",
                                kernel_shape=[2, 2], strides=[2, 2])
    add("output_shadows_input.onnx", make(nodes), 2, "duplicate|more than once|twice|already",
        "a node output reuses the graph input's name 'input'")
    inits = base_inits()
    inits.append(numpy_helper.from_array(np.zeros((4,), np.float32), "conv1.bias"))
    add("duplicate_initializer.onnx", make(inits=inits), 2, "duplicate|more than once|twice|two",
        "two initializers are both named conv1.bias")
    add("duplicate_graph_input.onnx", make(inputs=[f32_input(), f32_input()]), 2,
        "duplicate|more than once|twice", "graph.input lists 'input' twice")

    add("output_not_produced.onnx",
        make(outputs=[f32_output(), f32_output("logits_never_made")]), 2,
        "not produced|never produced|not defined|undefined",
        "graph output 'logits_never_made' is not produced by any node")
    add("no_outputs.onnx", make(outputs=[]), 2, "output", "the graph declares no outputs")

    add("conv_one_input.onnx", make(replace_node(0, helper.make_node(
        "Conv", ["input"], ["conv1"], name="Conv_0", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))),
        2, "input", "Conv with 1 input (needs 2 or 3)")
    add("relu_three_inputs.onnx", make(replace_node(1, helper.make_node(
        "Relu", ["conv1", "conv1", "conv1"], ["relu1"], name="Relu_1"))),
        2, "input", "Relu with 3 inputs (needs 1)")
    add("relu_no_outputs.onnx", make(replace_node(1, helper.make_node(
        "Relu", ["conv1"], [], name="Relu_1"))),
        2, "output|not defined|undefined", "Relu with no outputs (so relu1 is never defined)")

    # Optional inputs given as "" are legal ONNX (Conv without bias).
    m = make(replace_node(0, helper.make_node(
        "Conv", ["input", "conv1.weight", ""], ["conv1"], name="Conv_0",
        kernel_shape=[3, 3], pads=[1, 1, 1, 1])), inits=base_inits()[:1] + base_inits()[2:])
    add("valid_empty_optional_input.onnx", m, 0, "-",
        "POSITIVE: Conv(input, W, '') - an empty name marks an absent optional input",
        valid_onnx=True)


def attribute_and_shape_cases():
    def conv(**kw):
        attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
        attrs.update(kw)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        return helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1"],
                                name="Conv_0", **attrs)

    n = conv(kernel_shape=None)
    n.attribute.append(helper.make_attribute("kernel_shape", 3.0))
    add("conv_kernel_shape_float.onnx", make(replace_node(0, n)), 2, "kernel_shape",
        "Conv kernel_shape is a FLOAT attribute (3.0) instead of INTS")
    n = conv(strides=None)
    n.attribute.append(helper.make_attribute("strides", "1,1"))
    add("conv_strides_string.onnx", make(replace_node(0, n)), 2, "strides",
        "Conv strides is a STRING attribute instead of INTS")
    n = conv()
    a = [x for x in n.attribute if x.name == "pads"][0]
    a.type = onnx.AttributeProto.INTS
    a.ClearField("ints")
    a.f = 1.0
    add("conv_attr_type_no_value.onnx", make(replace_node(0, n)), 2, "pads",
        "Conv pads declares type INTS but carries only a float value")
    n = conv()
    n.attribute.append(helper.make_attribute("strides", [2, 2]))
    add("conv_duplicate_attribute.onnx", make(replace_node(0, n)), 2,
        "duplicate|more than once|twice",
        "Conv has two 'strides' attributes")
    add("conv_stride_zero.onnx", make(replace_node(0, conv(strides=[0, 0]))), 2, "stride",
        "Conv strides [0,0] (a division by zero in shape inference)")
    add("conv_dilation_negative.onnx", make(replace_node(0, conv(dilations=[-1, -1]))), 2,
        "dilation", "Conv dilations [-1,-1]")
    add("conv_kernel_shape_mismatch.onnx", make(replace_node(0, conv(kernel_shape=[5, 5]))), 2,
        "kernel", "Conv kernel_shape [5,5] but the weight is 4x1x3x3")
    add("conv_group_not_divisor.onnx", make(replace_node(0, conv(group=3))), 2, "group",
        "Conv group=3 with 1 input channel and 4 output channels")

    w = np.ones((4, 3, 3, 3), np.float32)
    add("conv_channel_mismatch.onnx",
        make(inits=replace_init("conv1.weight", numpy_helper.from_array(w, "conv1.weight"))), 2,
        "channel", "Conv weight 4x3x3x3 expects 3 input channels, the input has 1")
    add("conv_bias_mismatch.onnx",
        make(inits=replace_init("conv1.bias",
                                numpy_helper.from_array(np.ones(5, np.float32), "conv1.bias"))),
        2, "bias|mismatch|channel", "Conv bias has 5 elements for 4 output channels")
    add("conv_rank_mismatch.onnx", make(inputs=[f32_input(shape=(1, 64))]), 2,
        "rank|dimensions|4-d|4d", "Conv applied to a rank-2 input [1,64]")

    fw = np.ones((10, 60), np.float32)
    add("gemm_inner_mismatch.onnx",
        make(inits=replace_init("fc.weight", numpy_helper.from_array(fw, "fc.weight"))), 2,
        "match|inner", "Gemm: A is [1,64], B is [10,60] with transB=1 (64 vs 60)")

    def reshape_model(target):
        nodes = base_nodes()
        nodes[3] = helper.make_node("Reshape", ["pool1", "shape"], ["flat"], name="Reshape_3")
        inits = base_inits() + [numpy_helper.from_array(np.array(target, np.int64), "shape")]
        return make(nodes, inits)
    add("valid_reshape.onnx", reshape_model([1, -1]), 0, "-",
        "POSITIVE: Flatten replaced by Reshape to a constant [1,-1]", valid_onnx=True)
    add("reshape_impossible.onnx", reshape_model([7, 7]), 2, "reshape",
        "Reshape 64 elements ([1,4,4,4]) to [7,7] (49)")
    add("reshape_not_divisible.onnx", reshape_model([3, -1]), 2, "reshape",
        "Reshape 64 elements to [3,-1] (64 is not divisible by 3)")
    add("reshape_two_minus_one.onnx", reshape_model([-1, -1]), 2, "reshape|-1",
        "Reshape target [-1,-1] (at most one -1 allowed)")
    add("reshape_negative_target.onnx", reshape_model([-4, -16]), 2, "reshape|negative",
        "Reshape target [-4,-16] (only -1 may be negative)")

    nodes = base_nodes()
    nodes[2] = helper.make_node("MaxPool", ["relu1"], ["pool1"], name="MaxPool_2",
                                kernel_shape=[16, 16])
    add("maxpool_kernel_too_big.onnx", make(nodes), 2, "kernel|window|too small|larger|fit",
        "MaxPool 16x16 without padding on an 8x8 map (output size would be < 1)")
    nodes = base_nodes()
    nodes[3] = helper.make_node("Flatten", ["pool1"], ["flat"], name="Flatten_3", axis=7)
    add("flatten_axis_out_of_range.onnx", make(nodes), 2, "axis",
        "Flatten axis=7 on a rank-4 tensor")
    nodes = base_nodes()
    nodes[1] = helper.make_node("Add", ["conv1", "addend"], ["relu1"], name="Add_1")
    inits = base_inits() + [numpy_helper.from_array(np.ones(3, np.float32), "addend")]
    add("add_broadcast_mismatch.onnx", make(nodes, inits), 2, "broadcast",
        "Add of [1,4,8,8] and [3]: shapes cannot broadcast")
    nodes = base_nodes()
    nodes[1] = helper.make_node("BatchNormalization",
                                ["conv1", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["relu1"],
                                name="BatchNormalization_1")
    inits = base_inits() + [numpy_helper.from_array(np.ones(n, np.float32), name)
                            for name, n in (("bn.scale", 4), ("bn.bias", 4), ("bn.mean", 6),
                                            ("bn.var", 4))]
    add("batchnorm_channel_mismatch.onnx", make(nodes, inits), 2, "channel|mismatch|bn.mean",
        "BatchNormalization mean has 6 elements for 4 channels")
    nodes = base_nodes()
    nodes.insert(4, helper.make_node("Concat", ["flat", "relu1"], ["cat"], name="Concat_4",
                                     axis=1))
    nodes[5] = helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["output"],
                                name="Gemm_5", transB=1)
    add("concat_rank_mismatch.onnx", make(nodes), 2, "concat|rank|mismatch",
        "Concat of a rank-2 and a rank-4 tensor")


def tensor_cases():
    def raw(name, dtype, dims, data):
        t = TensorProto()
        t.name = name
        t.data_type = dtype
        t.dims.extend(dims)
        t.raw_data = data
        return t

    w = weights()["conv1.weight"]
    good = w.tobytes()

    add("init_raw_size_mismatch.onnx",
        make(inits=replace_init("conv1.weight", raw("conv1.weight", TensorProto.FLOAT,
                                                    [4, 1, 3, 3], good[:-4]))),
        2, "size|bytes", "conv1.weight dims 4x1x3x3 (144 bytes) but raw_data holds 140 bytes")
    add("init_raw_size_too_long.onnx",
        make(inits=replace_init("conv1.weight", raw("conv1.weight", TensorProto.FLOAT,
                                                    [4, 1, 3, 3], good + good[:8]))),
        2, "size|bytes", "conv1.weight dims 4x1x3x3 (144 bytes) but raw_data holds 152 bytes")
    t = helper.make_tensor("conv1.weight", TensorProto.FLOAT, [4, 1, 3, 3], w.flatten())
    del t.float_data[-1]
    add("init_float_data_count.onnx", make(inits=replace_init("conv1.weight", t)), 2,
        "size|count|elements", "conv1.weight dims 4x1x3x3 (36 values) but float_data has 35")
    t = TensorProto()
    t.name, t.data_type = "conv1.weight", TensorProto.FLOAT
    t.dims.extend([4, 1, 3, 3])
    add("init_no_data.onnx", make(inits=replace_init("conv1.weight", t)), 2,
        "no data|empty|missing|size|elements",
        "conv1.weight has dims 4x1x3x3 and no data in any field")
    t = helper.make_tensor("conv1.weight", TensorProto.FLOAT, [4, 1, 3, 3], w.flatten())
    t.raw_data = good
    add("init_raw_and_float_data.onnx", make(inits=replace_init("conv1.weight", t)), 2,
        "raw_data|both", "conv1.weight carries both raw_data and float_data")
    t = helper.make_tensor("shape", TensorProto.INT64, [2], [1, -1])
    t.ClearField("int64_data")
    t.int32_data.extend([1, -1])
    nodes = base_nodes()
    nodes[3] = helper.make_node("Reshape", ["pool1", "shape"], ["flat"], name="Reshape_3")
    add("init_int64_in_int32_data.onnx", make(nodes, base_inits() + [t]), 2,
        "int32_data|int64_data|size|count|data",
        "an INT64 tensor (Reshape target) whose values are stored in int32_data")

    add("init_negative_dims.onnx",
        make(inits=replace_init("conv1.weight", raw("conv1.weight", TensorProto.FLOAT,
                                                    [4, -1, 3, 3], good))),
        2, "negative", "conv1.weight dims [4,-1,3,3]")
    add("init_huge_dims_overflow.onnx",
        make(inits=replace_init("conv1.weight", raw("conv1.weight", TensorProto.FLOAT,
                                                    [2**40, 2**40, 3, 3], good))),
        2, "overflow|too large|size",
        "conv1.weight dims [2^40,2^40,3,3]: the element count overflows int64")
    add("init_dims_bytes_overflow.onnx",
        make(inits=replace_init("conv1.weight", raw("conv1.weight", TensorProto.FLOAT,
                                                    [2**31, 2**31, 1, 1], good))),
        2, "overflow|too large|size",
        "conv1.weight dims [2^31,2^31,1,1]: 2^62 elements fit int64 but 2^64 bytes do not")
    add("init_huge_dims_memory.onnx",
        make(inits=replace_init("conv1.weight", raw("conv1.weight", TensorProto.FLOAT,
                                                    [4, 1, 65536, 65536], good))),
        2, "size|too large|bytes",
        "conv1.weight dims [4,1,65536,65536] = 64 GiB declared, 144 bytes present: "
        "must be refused from the sizes, not by allocating")
    add("init_int64_max_dim.onnx",
        make(inits=replace_init("conv1.weight", raw("conv1.weight", TensorProto.FLOAT,
                                                    [2**63 - 1], good))),
        2, "overflow|too large|size", "conv1.weight dims [INT64_MAX]")

    # Zero dims. An empty tensor is legal ONNX data; a Conv layer with 0 filters is not a network
    # that can be trained.
    empty = raw("unused.empty", TensorProto.FLOAT, [0, 4], b"")
    add("valid_zero_dim_unused_initializer.onnx", make(inits=base_inits() + [empty]), 0, "-",
        "POSITIVE: an extra initializer with dims [0,4] and no data (legal empty tensor), unused",
        valid_onnx=True)
    zero = {"conv1.weight": [0, 1, 3, 3], "conv1.bias": [0], "fc.weight": [10, 0]}
    inits = [raw(t.name, TensorProto.FLOAT, zero[t.name], b"") if t.name in zero else t
             for t in base_inits()]
    add("init_zero_dims_conv.onnx", make(inits=inits), 2, "zero|empty",
        "conv1.weight [0,1,3,3], conv1.bias [0], fc.weight [10,0]: legal ONNX and consistent "
        "(Conv with no filters, Gemm over 0 features) but not a trainable layer", valid_onnx=True)

    # Unsupported data types on a Conv weight.
    t = TensorProto()
    t.name, t.data_type = "conv1.weight", TensorProto.STRING
    t.dims.extend([4, 1, 3, 3])
    t.string_data.extend([b"0.5"] * 36)
    add("init_dtype_string.onnx", make(inits=replace_init("conv1.weight", t)), 2,
        "string|dtype|data type|type", "conv1.weight is a STRING tensor (36 strings)")
    add("init_dtype_complex64.onnx",
        make(inits=replace_init("conv1.weight", raw("conv1.weight", TensorProto.COMPLEX64,
                                                    [4, 1, 3, 3], good + good))),
        2, "complex64|complex|dtype|data type", "conv1.weight is a COMPLEX64 tensor")
    add("init_dtype_999.onnx",
        make(inits=replace_init("conv1.weight", raw("conv1.weight", 999, [4, 1, 3, 3], good))),
        2, "999|dtype|data type|type", "conv1.weight has data_type 999 (not in the enum)")
    add("init_dtype_undefined.onnx",
        make(inits=replace_init("conv1.weight", raw("conv1.weight", TensorProto.UNDEFINED,
                                                    [4, 1, 3, 3], good))),
        2, "undefined|dtype|data type|type", "conv1.weight has data_type 0 (UNDEFINED)")

    add("input_elem_type_0.onnx", make(inputs=[f32_input(elem=TensorProto.UNDEFINED)]), 2,
        "undefined|elem_type|dtype|data type|type", "graph input has elem_type 0 (UNDEFINED)")
    add("input_elem_type_complex64.onnx",
        make(inputs=[f32_input(elem=TensorProto.COMPLEX64)]), 2,
        "complex64|complex|dtype|data type|type", "graph input is COMPLEX64")
    add("input_negative_dim.onnx", make(inputs=[f32_input(shape=(1, 1, -8, 8))]), 2, "negative",
        "graph input shape [1,1,-8,8]")
    add("input_huge_dims.onnx", make(inputs=[f32_input(shape=(1, 1, 2**40, 2**40))]), 2,
        "overflow|too large",
        "graph input [1,1,2^40,2^40]: the Conv output's element count overflows int64")

    # Storage-form positives.
    inits = [helper.make_tensor(name, TensorProto.FLOAT, a.shape, a.flatten())
             for name, a in weights().items()]
    add("valid_float_data.onnx", make(inits=inits), 0, "-",
        "POSITIVE: the base model with initializers in float_data instead of raw_data",
        valid_onnx=True)
    m = make()
    for t in base_inits():
        m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    add("valid_initializers_as_inputs.onnx", m, 0, "-",
        "POSITIVE: initializers also listed in graph.input "
        "(torch.onnx.export keep_initializers_as_inputs=True, old IR style)", valid_onnx=True)
    m = make(inputs=[f32_input(shape=("N", 1, 8, 8))], outputs=[f32_output(shape=("N", 10))])
    add("valid_dynamic_batch.onnx", m, 0, "-",
        "POSITIVE: symbolic batch dimension 'N' (dynamic_axes export)", valid_onnx=True)


def external_cases():
    """External data. ext_valid.bin holds all four base tensors at unaligned offsets."""
    blob = bytearray()
    offsets = {}
    for name, a in weights().items():
        blob += b"\xa5" * 3        # padding so offsets are not aligned
        offsets[name] = (len(blob), a.nbytes)
        blob += a.tobytes()
    write_side_file(os.path.join(CORPUS, "ext_valid.bin"), bytes(blob))
    # The bait: a naive importer that follows ../outside.bin finds valid data there and succeeds.
    write_side_file(OUTSIDE, bytes(blob))

    def ext_model(edits=None):
        """The base model, every tensor external in ext_valid.bin; edits[name] overrides keys."""
        m = make()
        for t in m.graph.initializer:
            off, length = offsets[t.name]
            keys = {"location": "ext_valid.bin", "offset": str(off), "length": str(length)}
            keys.update((edits or {}).get(t.name, {}))
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for k, v in keys.items():
                if v is not None:
                    e = t.external_data.add()
                    e.key, e.value = k, v
        return m

    m = ext_model()
    add("ext_valid.onnx", m, 0, "-",
        "POSITIVE: all initializers external in ext_valid.bin (same folder, unaligned offsets)",
        valid_onnx=True)
    cw = "conv1.weight"
    add("ext_parent_dir.onnx", ext_model({cw: {"location": "../outside.bin"}}), 2,
        "outside|not allowed|escapes",
        "conv1.weight location '../outside.bin' (exists, valid data: must still be refused)")
    add("ext_dot_parent_dir.onnx", ext_model({cw: {"location": "./../outside.bin"}}), 2,
        "outside|not allowed|escapes", "conv1.weight location './../outside.bin'")
    add("ext_absolute_path.onnx", ext_model({cw: {"location": "/etc/passwd", "offset": "0"}}),
        2, "outside|absolute|not allowed",
        "conv1.weight location '/etc/passwd' (absolute path, readable, long enough)")
    add("ext_missing_file.onnx", ext_model({cw: {"location": "weights_gone.bin"}}), 2,
        "weights_gone.bin&no such file|not found|missing|cannot open|does not exist",
        "conv1.weight location 'weights_gone.bin' does not exist")
    add("ext_no_location.onnx", ext_model({cw: {"location": None}}), 2, "location",
        "conv1.weight is EXTERNAL but has no 'location' key")
    add("ext_empty_location.onnx", ext_model({cw: {"location": ""}}), 2,
        "location|directory|regular", "conv1.weight location '' (would name the folder itself)")
    size = len(blob)
    add("ext_offset_past_end.onnx", ext_model({cw: {"offset": str(size + 100)}}), 2,
        "past|beyond|exceeds|end of|too short|outside",
        f"conv1.weight offset {size + 100} is past the end of ext_valid.bin ({size} bytes)")
    add("ext_length_past_end.onnx",
        ext_model({cw: {"offset": str(size - 100), "length": "144"}}), 2,
        "past|beyond|exceeds|end of|too short|outside",
        f"conv1.weight offset {size - 100} + length 144 runs past the end ({size} bytes)")
    add("ext_offset_overflow.onnx",
        ext_model({cw: {"offset": "18446744073709551600", "length": "144"}}), 2,
        "offset|past|beyond|exceeds|overflow",
        "conv1.weight offset 2^64-16: offset + length wraps around")
    add("ext_offset_negative.onnx", ext_model({cw: {"offset": "-4"}}), 2, "offset|negative",
        "conv1.weight offset '-4'")
    add("ext_offset_garbage.onnx", ext_model({cw: {"offset": "12abc"}}), 2, "offset",
        "conv1.weight offset '12abc' (not a number)")
    add("ext_length_mismatch.onnx", ext_model({cw: {"length": "100"}}), 2,
        "length|size|bytes", "conv1.weight length 100 but dims 4x1x3x3 need 144 bytes")
    add("ext_symlink.onnx", ext_model({cw: {"location": "ext_symlink.bin"}}), 2,
        "outside|not allowed|escapes",
        "used by run.sh only: location 'ext_symlink.bin', a symlink that run.sh makes")


def positive_cases():
    """Valid models using the less common storage and structure forms the importer must read."""
    w = weights()
    # fc.weight as a sparse_initializer (values + ascending linear int64 indices), half its entries zero
    fcw = w["fc.weight"].copy()
    fcw[:, ::2] = 0
    idx = np.flatnonzero(fcw).astype(np.int64)
    sp = helper.make_sparse_tensor(numpy_helper.from_array(fcw.ravel()[idx], "fc.weight"),
                                   numpy_helper.from_array(idx, "fc.weight_indices"), list(fcw.shape))
    m = make(inits=[t for t in base_inits() if t.name != "fc.weight"])
    m.graph.sparse_initializer.extend([sp])
    add("valid_sparse_initializer.onnx", m, 0, "-",
        "POSITIVE: fc.weight stored as a sparse_initializer (linear indices), as swatc's own export writes it")
    # a model-local function: Gemm + Relu called as local::LinearRelu, with an attribute reference
    fn = helper.make_function(
        "local", "LinearRelu", ["x", "w", "b"], ["y"],
        [helper.make_node("Gemm", ["x", "w", "b"], ["t"], transB=1),
         helper.make_node("Relu", ["t"], ["y"])],
        [helper.make_opsetid("", 13)])
    nodes = base_nodes()[:-1] + [helper.make_node("LinearRelu", ["flat", "fc.weight", "fc.bias"], ["output"],
                                                  name="call_0", domain="local")]
    m = make(nodes=nodes, opsets=[helper.make_opsetid("", 13), helper.make_opsetid("local", 1)])
    m.functions.extend([fn])
    add("valid_function_call.onnx", m, 0, "-", "POSITIVE: the head as a model-local FunctionProto (inlined at import)",
        valid_onnx=True)
    # a dynamic-batch flatten written as Shape -> Gather -> Unsqueeze -> Concat -> Reshape (what PyTorch exports)
    nodes = base_nodes()[:3] + [
        helper.make_node("Shape", ["pool1"], ["shp"]),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
        helper.make_node("Constant", [], ["ax0"], value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("Constant", [], ["m1"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["n1", "m1"], ["target"], axis=0),
        helper.make_node("Reshape", ["pool1", "target"], ["flat"]),
        base_nodes()[4]]
    m = make(nodes=nodes, inputs=[f32_input(shape=("batch", 1, 8, 8))], outputs=[f32_output(shape=("batch", 10))])
    add("valid_shape_chain.onnx", m, 0, "-", "POSITIVE: Shape/Gather/Unsqueeze/Concat feeding Reshape (folded at import)",
        valid_onnx=True)


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    os.makedirs(CORPUS)
    base = make()
    valid_bytes = base.SerializeToString()
    add("valid_base.onnx", base, 0, "-", "POSITIVE: the tiny conv net every other case breaks",
        valid_onnx=True)
    file_level_cases(valid_bytes)
    model_level_cases()
    unsupported_cases()
    graph_structure_cases()
    attribute_and_shape_cases()
    tensor_cases()
    external_cases()
    positive_cases()

    names = [r[0] for r in ROWS]
    assert len(names) == len(set(names)), "duplicate case file names"
    with open(MANIFEST, "w") as f:
        f.write("# file\texpected_exit\tkeyword\tdescription"
                "  (generated by make_corpus.py; do not edit)\n")
        for fname, code, keyword, desc in sorted(ROWS):
            if fname == "ext_symlink.onnx":
                continue  # needs a symlink made at test time; run.sh handles it
            f.write(f"{fname}\t{code}\t{keyword}\t{desc}\n")
    print(f"make_corpus: wrote {len(ROWS)} files to {os.path.relpath(CORPUS)}")


if __name__ == "__main__":
    main()
