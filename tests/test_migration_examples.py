"""docs/migrating-from-braintrace.md and its example programs (issue #15 item 8).

The examples run as scripts (``python docs/examples/<file>.py`` from the repository root)
and must learn: each prints ``<a> -> <b>`` for its first and final loss, b < a. The guide's
tables must list every public name of braintrace 0.2.8 (``braintrace.__all__`` and
``braintrace.nn.__all__``, copied below from the installed package because braintrace is not
a test dependency) with a status.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "migrating-from-braintrace.md"
EXAMPLES = ROOT / "docs" / "examples"
IMPORT_LINE = "import disttrace as braintrace  # the only change from a braintrace 0.2.8 program"
BRAINTRACE_PYTHON = ROOT / "benchmarks" / ".venv-braintrace" / "bin" / "python"

# benchmarks/.venv-braintrace/bin/python -c "import braintrace, braintrace.nn;
#     print(braintrace.__all__, braintrace.nn.__all__)"   (braintrace 0.2.8)
BRAINTRACE_ALL = [
    "__version__", "__version_info__", "ETraceConfig", "ETraceAlgorithm", "EligibilityTrace", "ETraceVmap",
    "SequenceDriverMixin", "ETraceVjpAlgorithm", "ETraceVjpGraphExecutor", "ParamDimVjpAlgorithm", "D_RTRL",
    "pp_prop", "ES_D_RTRL", "IODimVjpAlgorithm", "SnAp", "RandomProjectionVjpAlgorithm", "UORO", "ThreeFactor",
    "DNI", "SyntheticGradient", "train_synthetic_gradient", "compile", "matmul", "grouped_matmul", "embedding",
    "einsum", "element_wise", "conv", "sparse_matmul", "lora_matmul", "ETPPrimitive", "register_primitive",
    "SingleStepData", "MultiStepData", "ETraceGraphExecutor", "ControlFlowPolicy", "ETraceGraph",
    "compile_etrace_graph", "HiddenGroup", "find_hidden_groups_from_minfo", "find_hidden_groups_from_module",
    "HiddenParamOpRelation", "find_hidden_param_op_relations_from_minfo",
    "find_hidden_param_op_relations_from_module", "ModuleInfo", "extract_module_info", "HiddenPerturbation",
    "add_hidden_perturbation_from_minfo", "add_hidden_perturbation_in_module", "CompilationRecord",
    "CompilationReport", "DiagnosticKind", "DiagnosticLevel", "GradExpon", "EProp", "OSTLRecurrent",
    "OSTLFeedforward", "FixedRandomFeedback", "KappaFilter", "NotSupportedError", "CompilationError", "nn",
]  # fmt: skip
BRAINTRACE_NN_ALL = [
    "Conv1d", "Conv2d", "Conv3d", "Linear", "GroupedLinear", "SignedWLinear", "ScaledWSLinear", "SparseLinear",
    "LoRA", "Embedding", "LeakyRateReadout", "ValinaRNNCell", "GRUCell", "MGUCell", "LSTMCell", "URLSTMCell",
    "MinimalRNNCell", "MiniGRU", "MiniLSTM", "LRUCell", "CFNCell",
]  # fmt: skip
STATUSES = {"same", "renamed", "not supported", "not supported (yet)"}
# example -> the regex of its last line, (first, final) loss
PROGRAMS = {
    "braintrace_rnn_d_rtrl.py": r"first loss ([\d.]+) -> final loss ([\d.]+)",
    "braintrace_snn_pp_prop.py": r"first loss ([\d.]+) -> final loss ([\d.]+)",
    "braintrace_multistep.py": r"held-out loss ([\d.]+) -> ([\d.]+)",
    "braintrace_units_lif.py": r"first loss ([\d.]+) -> final loss ([\d.]+)",
}


def _table_rows() -> dict:
    """``{'braintrace.X': (disttrace column, status, notes)}`` from the guide's tables."""
    rows = {}
    for line in GUIDE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`braintrace(\.\w+)*`", cells[0]):
            name = cells[0].strip("`")
            assert name not in rows, f"{name} is listed twice"
            rows[name] = tuple(cells[1:4])
    return rows


def test_guide_lists_every_braintrace_name_with_a_status():
    assert len(BRAINTRACE_ALL) == 62 and len(BRAINTRACE_NN_ALL) == 21
    rows = _table_rows()
    want = {f"braintrace.{n}" for n in BRAINTRACE_ALL} | {f"braintrace.nn.{n}" for n in BRAINTRACE_NN_ALL}
    assert sorted(want - set(rows)) == []
    assert sorted(set(rows) - want) == []
    bad = {name: status for name, (_, status, _) in rows.items() if status not in STATUSES}
    assert bad == {}
    # a counterpart is named wherever the status says there is one
    missing = [name for name, (ours, status, _) in rows.items() if status in ("same", "renamed") and "disttrace" not in ours]
    assert missing == []


def test_guide_same_names_exist_in_disttrace():
    """Every name marked ``same`` is importable from disttrace under that name."""
    import disttrace

    absent = []
    for name, (ours, status, _) in _table_rows().items():
        if status != "same":
            continue
        obj = disttrace
        for part in ours.strip("`").split(".")[1:]:
            obj = getattr(obj, part, None)
        if obj is None or ours.strip("`").split(".")[-1] != name.split(".")[-1]:
            absent.append((name, ours))
    assert absent == []


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_example_file_differs_from_braintrace_in_its_first_import(program):
    source = (EXAMPLES / program).read_text()
    lines = source.splitlines()
    first = min((node for node in ast.parse(source).body if isinstance(node, ast.Import | ast.ImportFrom)),
                key=lambda node: node.lineno)
    assert lines[first.lineno - 1] == IMPORT_LINE
    assert not any("disttrace" in line for line in lines if line != IMPORT_LINE)


def _run(python, path: Path, timeout: int):
    proc = subprocess.run([str(python), str(path)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _check_learned(program: str, stdout: str):
    match = re.search(PROGRAMS[program], stdout)
    assert match, stdout[-2000:]
    first, final = map(float, match.groups())
    assert final < first, stdout[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_example_runs_and_learns(program):
    _check_learned(program, _run(sys.executable, EXAMPLES / program, timeout=300))


@pytest.mark.slow
@pytest.mark.skipif(not BRAINTRACE_PYTHON.exists(), reason="braintrace 0.2.8 venv not set up (bash benchmarks/setup_braintrace.sh)")
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_example_runs_under_braintrace(program, tmp_path):
    """The same program with its first import replaced by ``import braintrace`` runs under
    braintrace 0.2.8 and learns too."""
    source = (EXAMPLES / program).read_text()
    assert source.count(IMPORT_LINE) == 1
    copy = tmp_path / program
    copy.write_text(source.replace(IMPORT_LINE, "import braintrace"))
    _check_learned(program, _run(BRAINTRACE_PYTHON, copy, timeout=300))
