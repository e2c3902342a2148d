"""The gradient checker and its registry: every registered case passes, planted bugs are caught."""
import importlib
import subprocess
import sys

import numpy as np
import pytest

from lvae_np import gradcheck, layers as L
from lvae_np.gradcheck import GradientError, assert_gradients, cases, check_gradients
from lvae_np.gradcheck.__main__ import main
from lvae_np.gradcheck.cases import CASES, KINDS, NAME, Case, find_case

rng = np.random.default_rng(42)


def ids(selected):
    return [c.name for c in selected]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_every_registered_case_passes_on_every_namespace(case, xp):
    """All cases, forward and backward, on NumPy, array_api_strict (and CuPy where present)."""
    # Whole models are slow on array_api_strict: a sample of each parameter array will do.
    sample = 3 if xp is not np and case.kind == "model" else None
    report = case.check(seed=3, xp=xp, max_elements=sample)
    assert report.passed, str(report)
    assert all(a.max_rel_error <= 1e-6 for a in report.arguments)


# ----------------------------------------------------------------------------
# Planted bugs: the checker must fail, and say where
# ----------------------------------------------------------------------------
def _dense_inputs(d=4, m=3):
    return [rng.normal(size=(5, d)), rng.normal(size=(d, m)), rng.normal(size=m)]


def test_catches_a_flipped_sign_and_names_the_argument():
    def bad_backward(dout, cache):
        dx, dW, db = L.dense_backward(dout, cache)
        return dx, dW, -db

    with pytest.raises(GradientError) as err:
        assert_gradients(L.dense_forward, bad_backward, _dense_inputs())
    msg = str(err.value)
    assert "gradient of 'b'" in msg and "max relative error 2 " in msg and "at index (" in msg
    assert "'x'" not in msg and "'W'" not in msg  # the right gradients are not blamed


def test_catches_a_sign_flip_inside_a_formula():
    def bad_backward(dout, cache):  # softplus' = sigmoid(x), written as sigmoid(-x)
        return (dout * L.sigmoid(-cache.x),)

    report = check_gradients(L.softplus_forward, bad_backward, [rng.normal(size=(4, 3))])
    assert not report.passed and report.arguments[0].max_rel_error > 1e-2


def test_catches_batchnorm_backward_with_a_term_missing():
    def bad_backward(dout, cache):  # forgets the gradient through the batch variance
        xhat, inv_std, gamma, _, _ = cache
        g = dout * gamma
        n = dout.shape[0]
        dx = (inv_std / n) * (n * g - g.sum(axis=0))
        return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)

    x = rng.normal(2.0, 3.0, size=(8, 3))
    fwd = lambda x, gamma, beta: L.batchnorm_forward(x, gamma, beta, training=True)  # noqa: E731
    report = check_gradients(fwd, bad_backward, [x, rng.uniform(0.5, 2, 3), rng.normal(size=3)])
    failed = {a.name for a in report.arguments if not a.passed}
    assert failed == {"x"}
    assert report.arguments[0].max_rel_error > 1e-2


def test_catches_dense_with_a_wrong_transpose():
    def bad_backward(dout, cache):  # dx = G W instead of G W^T
        x, W, _ = cache
        return dout @ W, x.T @ dout, dout.sum(axis=0)

    # Square weights: the shapes fit, so only the values can tell.
    with pytest.raises(GradientError, match="gradient of 'x': max relative error"):
        assert_gradients(L.dense_forward, bad_backward, _dense_inputs(d=3, m=3))


def test_catches_a_gradient_of_the_wrong_shape():
    def bad_backward(dout, cache):  # dW = G^T x: (M, D) instead of (D, M)
        x, W, _ = cache
        return dout @ W.T, dout.T @ x, dout.sum(axis=0)

    with pytest.raises(GradientError, match=r"'W': shape \(3, 4\) differs from the input's \(4, 3\)"):
        assert_gradients(L.dense_forward, bad_backward, _dense_inputs(d=4, m=3))


def test_catches_a_backward_that_writes_into_dout():
    def bad_backward(dout, cache):  # the classic: dx = dout; dx[x <= 0] = 0
        dx = dout
        dx[cache.x <= 0] = 0
        return (dx,)

    x = rng.choice([-1.0, 1.0], size=(6, 4)) * rng.uniform(0.1, 1, size=(6, 4))
    report = check_gradients(lambda x: L.leaky_relu_forward(x, slope=0.0), bad_backward, [x])
    assert "backward changed dout" in report.problems


def test_catches_a_non_zero_gradient_for_a_zero_upstream_gradient():
    def bad_backward(dout, cache):
        dx, dW, db = L.dense_backward(dout, cache)
        return dx, dW, db + 1e-3 * (dout.sum() == 0)

    report = check_gradients(L.dense_forward, bad_backward, _dense_inputs())
    assert any("zero upstream gradient" in p for p in report.problems)


def test_catches_a_backward_that_is_not_reentrant():
    calls = []

    def bad_backward(dout, cache):
        calls.append(1)
        dx, dW, db = L.dense_backward(dout, cache)
        return dx, dW, db * (1 + 1e-9 * len(calls))

    report = check_gradients(L.dense_forward, bad_backward, _dense_inputs())
    assert any("twice" in p for p in report.problems)


def test_catches_a_wrong_dtype():
    def bad_backward(dout, cache):
        dx, dW, db = L.dense_backward(dout, cache)
        return dx, dW, db.astype(np.float32)

    with pytest.raises(GradientError, match="dtype float32 differs"):
        assert_gradients(L.dense_forward, bad_backward, _dense_inputs())


def test_refuses_float32_with_a_clear_message():
    x = rng.normal(size=(3, 3)).astype(np.float32)
    with pytest.raises(TypeError, match=r"float64 inputs, but 'x' is float32"):
        check_gradients(L.softplus_forward, L.softplus_backward, [x])


def test_the_upstream_gradient_is_random_not_constant():
    dout = gradcheck.random_like(np.zeros((50, 3)), np.random.default_rng(0))
    assert dout.std() > 0.5 and len(np.unique(dout)) == dout.size


def test_order_2_and_order_4_agree_on_a_smooth_op():
    x = [rng.normal(size=(3, 4))]
    d = gradcheck.random_like(L.softplus_forward(x[0])[0], np.random.default_rng(1))
    g2 = gradcheck.numerical_gradient(L.softplus_forward, x, 0, d, h=1e-5, order=2).grad
    g4 = gradcheck.numerical_gradient(L.softplus_forward, x, 0, d, h=1e-3, order=4).grad
    np.testing.assert_allclose(g2, g4, rtol=1e-8)


def test_max_elements_checks_a_sample():
    report = check_gradients(L.dense_forward, L.dense_backward, _dense_inputs(), max_elements=3)
    assert report.passed


# ----------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------
def test_names_are_unique_one_word_and_tagged():
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names)
    for case in CASES:
        assert NAME.fullmatch(case.name) and case.name == case.name.strip(), case.name
        assert case.kind in KINDS and case.title, case.name
        importlib.import_module(f"lvae_np.{case.module}")  # the module tag names a real module
    assert {c.kind for c in CASES} == set(KINDS)


# Every forward/backward pair these modules define has a registered case.
OP_MODULES = ("layers", "gaussian", "likelihoods", "blocks", "bounds", "steps", "variants")
# Pairs checked only through the cases built on them: steps.kl_term picks the KL
# estimator, and its closed-form branch returns None for the z-gradient (the
# closed form does not depend on z), which no finite difference compares with.
# ladder-step, top-step and vae-kl-step check both of its branches. The passes of
# steps.py (a whole model's per-sample part) are checked through the whole models.
THROUGH_OTHERS = {"kl_term_backward", "ladder_pass_backward", "vae_pass_backward"}


def _checked_backwards():
    found = set()
    for case in CASES:
        backward = case.backward
        while hasattr(backward, "__wrapped__"):  # with_positional_params keeps the original
            backward = backward.__wrapped__
        found.add(backward)
    return found


@pytest.mark.parametrize("module", OP_MODULES)
def test_every_op_pair_of_the_op_modules_is_registered(module):
    mod = importlib.import_module(f"lvae_np.{module}")
    pairs = [getattr(mod, n) for n in dir(mod) if n.endswith("_backward") and not n.startswith("_")
             and getattr(mod, n).__module__ == mod.__name__ and n not in THROUGH_OTHERS]
    assert pairs
    missing = [f.__name__ for f in pairs if f not in _checked_backwards()]
    assert not missing, f"no case checks {missing}: register one in lvae_np/gradcheck/"


def test_find_case_by_short_name():
    assert find_case("batchnorm").title.startswith("batch norm, training")
    assert find_case("kl_normal") is find_case("kl-normal")  # underscores read as hyphens
    with pytest.raises(cases.UnknownCaseError, match=r"unknown op 'batchnom' \(close: batchnorm"):
        find_case("batchnom")
    with pytest.raises(cases.UnknownCaseError, match="no registered name is close"):
        find_case("nosuch")


def test_register_appends_and_refuses_bad_or_taken_names(monkeypatch):
    monkeypatch.setattr(cases, "CASES", list(CASES))
    new = Case("softplus-copy", L.softplus_forward, L.softplus_backward,
               lambda rng: [rng.normal(size=(3, 2))], module="layers")
    cases.register(new)
    assert cases.CASES[-1] is new and find_case("softplus-copy") is new
    for name, kind in (("softplus-copy", "op"), ("two words", "op"), ("-dash", "op"),
                       ("fine-name", "block")):
        with pytest.raises(ValueError):
            cases.register(Case(name, L.softplus_forward, L.softplus_backward,
                                lambda rng: [], module="layers", kind=kind))
    assert len(cases.CASES) == len(CASES) + 1


def test_positional_params_refuse_a_gradient_dict_with_other_keys():
    from lvae_np.blocks import gaussian_head_forward, init_gaussian_head

    params = init_gaussian_head(rng, 3, 2, xp=np, dtype=np.float64)
    keys = sorted(params)

    def forgets_b_var(dout, cache):
        return dout[0] @ params["W_mu"].T, {k: params[k] for k in keys if k != "b_var"}

    fwd, bwd = gradcheck.with_positional_params(gaussian_head_forward, forgets_b_var, keys)
    out, cache = fwd(rng.normal(size=(4, 3)), *[params[k] for k in keys])
    with pytest.raises(ValueError, match="backward returned gradients for"):
        bwd(out, cache)


# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------
def test_cli_prints_a_table_and_exits_zero(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "max rel error" in out and "points" not in out  # the checker shows no points
    rows = [line.split() for line in out.splitlines()[2:-2]]
    assert [r[0] for r in rows] == [c.name for c in CASES]  # one row per case
    assert all(float(r[1]) <= 1e-6 and r[2] == "passed" for r in rows)
    assert f"{len(CASES)} of {len(CASES)} cases passed" in out


def test_cli_checks_cases_by_short_name(capsys):
    assert main(["batchnorm", "merge"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[2:-2]] == ["batchnorm", "merge"]
    assert "2 of 2 cases passed" in out
    assert main(["batchnorm", "merge", "-v"]) == 0  # a row per argument
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:-2]]
    assert rows == ["batchnorm", "x", "gamma", "beta", "merge", "mu_hat", "var_hat", "mu_p",
                    "var_p"]


def test_cli_exits_one_on_a_failure(capsys, monkeypatch):
    def wrong_backward(dout, cache):  # softplus' written as sigmoid(-x)
        return (dout * L.sigmoid(-cache.x),)

    broken = Case("broken-softplus", L.softplus_forward, wrong_backward,
                  lambda rng: [rng.normal(size=(3, 2))], module="layers")
    monkeypatch.setattr(cases, "CASES", list(CASES))
    cases.register(broken)
    assert main(["dense", "broken-softplus"]) == 1
    out = capsys.readouterr().out
    assert "broken-softplus" in out and "FAILED" in out
    assert "1 of 2 cases passed: 1 passed, 1 failed" in out


def _batchnorm_stub(dout, cache):
    # YOUR CODE HERE
    raise NotImplementedError()


def _batchnorm_wrong_in_training_mode(dout, cache):
    """Batch norm's backward that forgets the batch variance's term in training mode."""
    xhat, inv_std, gamma, training, _ = cache
    g = dout * gamma
    if training:
        dx = (inv_std / dout.shape[0]) * (dout.shape[0] * g - g.sum(axis=0))
    else:
        dx = g * inv_std
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


# What a wrong batch norm blocks: every case with batch norm in training mode.
BATCHNORM_DEPENDENTS = ("mlp", "gaussian-block", "bottom-up-step", "ladder-step",
                        "lvae-L3-bn-mc-beta0.5", "vae-L2-bn-iw3",
                        "lvae-L3-nobn-mc-beta0.5-headbn-unshared-muup-widths")


@pytest.mark.parametrize("op, verdict", [
    (_batchnorm_stub, "not implemented yet (batchnorm_backward)"),
    (_batchnorm_wrong_in_training_mode, "FAILED"),
])
def test_the_plain_cli_reports_one_op_on_a_screen_and_goes_on(op, verdict, capsys, monkeypatch):
    monkeypatch.setattr(L, "batchnorm_backward", op)
    assert main([]) == 1
    captured = capsys.readouterr()
    out = captured.out
    lines = out.splitlines()
    assert "Traceback" not in out + captured.err and captured.err == ""
    # A screen: one row per case that ran, and a few lines for the op and all it blocks
    # (not a row per argument of every case, nor a failure per dependent).
    passed = sum(line.endswith("  passed") for line in lines)
    assert len(lines) <= 45 and len(lines) - passed <= 16, out
    rows = {line.split()[0]: line for line in lines[2:] if not line.startswith(" ")}
    assert rows["batchnorm"].endswith(verdict)
    if verdict == "FAILED":  # the wrong argument, its error and where, in the next line only
        detail = lines[lines.index(rows["batchnorm"]) + 1]
        assert detail.startswith("    gradient of 'x': max relative error") and "at index" in detail
        assert "'gamma'" not in out and "'beta'" not in out
        assert rows["batchnorm-eval"].endswith("passed")  # evaluation mode is right
    # Grading went on after batch norm: the cases that do not use it ran and passed.
    for name in ("dense", "merge", "mlp-nobn", "top-step", "lvae-L2-nobn-iw3"):
        assert rows[name].endswith("passed"), name
    # Its dependents: not run, named once, on the lines of one "blocked by batchnorm".
    blocked = [i for i, line in enumerate(lines) if line.startswith("blocked by batchnorm:")]
    assert len(blocked) == 1
    text = " ".join(lines[blocked[0]:]).split("blocked by batchnorm-eval")[0]
    assert all(f" {name}," in text or f" {name} " in text or text.rstrip().endswith(name)
               for name in BATCHNORM_DEPENDENTS)
    assert not any(name in rows for name in BATCHNORM_DEPENDENTS)
    assert passed >= 20 and lines[-1].startswith(f"{passed} of {len(CASES)} cases passed: ")


def test_both_routes_print_the_same_verdicts(capsys, monkeypatch):
    monkeypatch.setattr(L, "batchnorm_backward", _batchnorm_wrong_in_training_mode)
    names = ["dense", "batchnorm", "softplus", "mlp", "gaussian-head"]
    assert main(names) == 1
    plain = capsys.readouterr().out.splitlines()
    assert main(["--grade", *names]) == 1
    graded = capsys.readouterr().out.splitlines()
    assert len(plain) == len(graded) == 11
    for a, b in zip(plain[2:-2], graded[2:-2]):  # the same rows, with points in --grade
        assert a.split()[0] == b.split()[0] and a.split()[-1] == b.split()[-1]
    points = {line.split()[0]: line.split()[1:-2] for line in graded[2:-2]
              if not line.startswith((" ", "blocked"))}
    assert points == {"dense": ["4", "/", "4"], "batchnorm": ["0", "/", "6"],  # the table's
                      "softplus": ["-"], "gaussian-head": ["-"],  # no assignment grades these
                      "leaky-relu": ["(used)"]}  # checked first: mlp uses it
    assert graded[-1].startswith("score 4 / 10: 3 passed, 1 failed, 1 blocked; checked first, "
                                 "no points here: 1 passed")


def test_cli_rejects_an_unknown_op_in_one_line_with_close_names(capsys):
    assert main(["dense", "batchnom"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing checked
    err = captured.err
    assert err.startswith("lvae_np.gradcheck: error: unknown op 'batchnom' (close: batchnorm")
    assert err.count("\n") == 1
    assert main(["nosuch", "--seed", "1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["--seed", "one"]) == 2
    assert capsys.readouterr().err.startswith("lvae_np.gradcheck: error: argument --seed")


def test_cli_lists_the_names(capsys):
    assert main(["--list"]) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == [c.name for c in CASES]
    assert main(["--list", "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(CASES)
    assert all(line.split()[0] == c.name and line.endswith(c.title) for line, c in zip(lines, CASES))


def test_cli_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "lvae_np.gradcheck", "dense", "sigmoid"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "2 of 2 cases passed" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "lvae_np.gradcheck", "nosuch"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_the_engine_imports_nothing_of_lvae_np_but_backend():
    code = ("import sys, lvae_np.backend\n"
            "before = set(sys.modules)\n"
            "import lvae_np.gradcheck\n"
            "print(sorted(m for m in set(sys.modules) - before if m.startswith('lvae_np')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(["lvae_np.gradcheck", "lvae_np.gradcheck.engine"])


# ----------------------------------------------------------------------------
# Kinks and rounding
# ----------------------------------------------------------------------------
def _dense_lrelu_dense():
    """A small composite: dense -> leaky ReLU -> dense, as networks chain them."""
    def forward(x, W1, W2):
        a, c1 = L.dense_forward(x, W1, None)
        h, c2 = L.leaky_relu_forward(a)
        out, c3 = L.dense_forward(h, W2, None)
        return out, (c1, c2, c3)

    def backward(dout, cache):
        c1, c2, c3 = cache
        dh, dW2, _ = L.dense_backward(dout, c3)
        (da,) = L.leaky_relu_backward(dh, c2)
        dx, dW1, _ = L.dense_backward(da, c1)
        return dx, dW1, dW2

    return forward, backward


def test_a_stencil_across_a_kink_is_shrunk_not_blamed_on_the_gradient():
    forward, backward = _dense_lrelu_dense()
    x, W1, W2 = rng.normal(size=(3, 2)), rng.normal(size=(2, 4)), rng.normal(size=(4, 2))
    x[0, 0] = 0.0
    x[0, 0] = -(x[0] @ W1)[1] / W1[0, 1] + 3e-5  # a pre-activation 3e-5 * W1[0, 1] from 0
    assert abs((x @ W1)[0, 1]) < 1e-4 * abs(W1[0, 1])
    report = assert_gradients(forward, backward, [x, W1, W2], h=1e-3)
    assert report.arguments[0].shrunk >= 1  # x[0, 0] had to step off the kink
    # Without the caches (so blind to kinks) the same step gives a wrong number:
    dout = rng.normal(size=(3, 2))
    blind = gradcheck.numerical_gradient(lambda *a: (forward(*a)[0], None), [x, W1, W2], 0,
                                         dout, h=1e-3)
    analytic = backward(dout, forward(x, W1, W2)[1])[0]
    assert blind.shrunk == 0
    assert abs(blind.grad[0, 0] - analytic[0, 0]) > 1e-3 * abs(analytic[0, 0])


def test_a_small_relative_error_is_still_caught():
    def slightly_wrong(dout, cache):
        dx, dW, db = L.dense_backward(dout, cache)
        return dx, dW * (1 + 1e-5), db

    report = check_gradients(L.dense_forward, slightly_wrong, _dense_inputs())
    assert [a.name for a in report.arguments if not a.passed] == ["W"]
    assert 5e-6 < report.arguments[1].max_rel_error < 2e-5


# ----------------------------------------------------------------------------
# Every registered op and composite: dtype kept, and array_api_strict gives NumPy's numbers
# ----------------------------------------------------------------------------
OPS = [c for c in CASES if c.kind != "model"]


def _pass(case, xp, dtype):
    inputs = [xp.astype(a, dtype) for a in case.inputs(seed=2, xp=xp)]
    out, cache = case.forward(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    r = np.random.default_rng(5)
    douts = tuple(xp.asarray(r.normal(size=o.shape), dtype=dtype) for o in outs)
    grads = case.backward(douts if isinstance(out, tuple) else douts[0], cache)
    return outs + tuple(grads)


@pytest.mark.parametrize("case", OPS, ids=ids(OPS))
def test_float32_stays_float32(case):
    for a in _pass(case, np, np.float32):
        assert a.dtype == np.float32


@pytest.mark.parametrize("case", OPS, ids=ids(OPS))
def test_array_api_strict_gives_numpys_numbers(case):
    xs = pytest.importorskip("array_api_strict")
    ours = _pass(case, np, np.float64)
    theirs = _pass(case, xs, xs.float64)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert b.__array_namespace__() is xs
        np.testing.assert_allclose(np.asarray(b), a, rtol=1e-15, atol=0)


# ----------------------------------------------------------------------------
# The autograder (grading.py): points, verdicts, blocked dependents
# ----------------------------------------------------------------------------
from lvae_np import gaussian as G  # noqa: E402
from lvae_np import steps as S  # noqa: E402
from lvae_np.gradcheck import grade, grading  # noqa: E402


def _stub(dout, cache):
    # YOUR CODE HERE
    raise NotImplementedError()


def test_grade_selects_the_cases_named_with_those_they_use_in_order():
    assert ids(grading.select(["mlp"])) == ["dense", "batchnorm", "leaky-relu", "mlp"]
    assert ids(grading.select("layers")) == [c.name for c in CASES if c.module == "layers"]
    assert ids(grading.select(["ops"])) == [c.name for c in CASES if c.kind == "op"]
    ladder = ids(grading.select(["ladder-step"]))
    assert ladder[-1] == "ladder-step" and {"merge", "kl-normal", "batchnorm"} <= set(ladder)
    with pytest.raises(cases.UnknownCaseError, match="close: batchnorm"):
        grading.select(["batchnom"])


def test_not_implemented_scores_nothing_and_grading_goes_on(monkeypatch):
    names = ["dense", "batchnorm", "sigmoid", "mlp"]
    everything = grade(names, everything=True)
    assert [i.points for i in everything.items] == [4, 6, 0, 2, 3]  # registry weights too
    assert everything.score == everything.total == 15
    # The student's stub: its own case scores nothing; mlp, graded on its own, runs the
    # installed batch norm.
    report = grade(names, using={"layers.batchnorm_backward": _stub})
    assert report.names() == ["dense", "batchnorm", "leaky-relu", "sigmoid", "mlp"]
    assert [report.status(n) for n in report.names()] == [
        "passed", "not implemented", "passed", "passed", "passed"]
    assert report.item("batchnorm").earned == 0 and not report.passed
    # The course's points (assignments 1 and 2): dense 4, batchnorm 6; sigmoid and mlp no
    # assignment grades; leaky-relu is only checked first (mlp uses it), so it does not count.
    assert [(i.points, i.counted) for i in report.items] == [
        (4, True), (6, True), (0, False), (0, True), (0, True)]
    assert report.score == 4 and report.total == 10 and report.earned == 4.0
    assert "not implemented yet (batchnorm_backward)" in str(report)  # the name to write
    # The stub installed, as in a student's copy of the package: what uses it is blocked.
    monkeypatch.setattr(L, "batchnorm_backward", _stub)
    installed = grade(names)
    assert [installed.status(n) for n in installed.names()] == [
        "passed", "not implemented", "passed", "passed", "blocked by batchnorm"]
    assert installed.score == 4 and "blocked by batchnorm: mlp" in str(installed)


def test_grade_without_names_grades_the_assigned_cases_with_the_notebooks_points():
    from lvae_np.gradcheck import points

    report = grade()
    assert report.passed, str(report)
    counted = {i.name: i.points for i in report.items if i.counted}
    assert counted == points.CASE_POINTS
    # The notebooks' test cells: "# 6 points" for batch norm, "# 10 points" for the two ladder
    # steps; no points for a whole LVAE (feedback); 36 of the 46 autograded points (the rest
    # check values in the notebooks).
    assert counted["batchnorm"] == 6 and counted["batchnorm-eval"] == 1
    assert counted["ladder-step"] + counted["ladder-step-mc"] == 10
    assert not [name for name in counted if cases.find_case(name).kind == "model"]
    assert report.score == report.total == 36 and report.earned == 36.0
    used = [i.name for i in report.items if not i.counted]
    assert {"mlp", "softplus", "gaussian-block"} <= set(used) and "sigmoid" not in used
    assert all(i.points == 0 for i in report.items if not i.counted)


def test_the_point_table_refuses_points_that_do_not_split():
    from lvae_np.gradcheck import points

    lopsided = points.Assignment("x.ipynb", "x", (), (points.Assigned("t", 5, ("a", "b")),))
    with pytest.raises(points.PointTableError, match="5 points do not split equally"):
        points.case_points((lopsided,))
    twice = points.Assignment("x.ipynb", "x", (), (points.Assigned("t", 2, ("a",)),
                                                   points.Assigned("u", 2, ("a",))))
    with pytest.raises(points.PointTableError, match="graded by two cells"):
        points.case_points((twice,))


def test_a_stub_is_not_implemented_even_where_what_it_uses_is_not(monkeypatch):
    # The ladder step's own backward is a stub, and so is the merge it uses: the merge is only
    # checked first, with the installed functions, so the student's is not graded here.
    using = {"steps.ladder_step_backward": _stub, "gaussian.merge_backward": _stub}
    report = grade(["ladder-step"], using=using)
    assert report.status("merge") == "passed" and not report.item("merge").counted
    assert report.status("ladder-step") == "not implemented"
    monkeypatch.setattr(G, "merge_backward", _stub)  # a stub installed (a student's copy)
    report = grade(["ladder-step"], using=using)
    assert report.status("merge") == "not implemented"
    assert report.status("ladder-step") == "not implemented"  # its own stub, not "blocked"


@pytest.mark.parametrize("returns, sentence", [
    (lambda g: None, "leaky_relu_backward returned None: it must return one gradient per "
                     "input (1: x)"),
    (lambda g: g, "leaky_relu_backward returned a ndarray, not a tuple: it must return one "
                  "gradient per input (1: x), e.g. (dx,)"),
    (lambda g: (g, g), "leaky_relu_backward returned 2 gradients: it must return one gradient "
                       "per input (1: x)"),
    (lambda g: (None,), "leaky_relu_backward returned None for 'x'"),
])
def test_a_backward_that_breaks_the_contract_gets_one_sentence(returns, sentence):
    def leaky_relu_backward(dout, cache):
        return returns(dout * 1.0)

    using = {"layers.leaky_relu_backward": leaky_relu_backward}
    report = grade(["leaky-relu", "mlp-nobn"], using=using)
    assert report.status("leaky-relu") == "failed"
    assert report.status("mlp-nobn") == "passed"  # on its own: the installed leaky ReLU
    (detail,) = report.item("leaky-relu").details
    assert detail.startswith(sentence)
    assert len(str(report).splitlines()) == 8  # dense (used), leaky-relu and its one line
    together = grade(["leaky-relu", "mlp-nobn"], using=using, together=True)
    assert together.status("mlp-nobn") == "blocked by leaky-relu"
    assert together.item("leaky-relu").details == [detail]


def test_an_exception_is_one_sentence_with_the_line_that_raised():
    def dense_backward(dout, cache):
        x, W, _ = cache
        return dout @ W, x.T @ dout, dout.sum(axis=0)  # G W instead of G W^T: shapes clash

    report = grade(["dense"], using={"layers.dense_backward": dense_backward})
    assert report.status("dense") == "error"
    (detail,) = report.item("dense").details
    assert detail.startswith("dense_backward raised ValueError: matmul")
    assert detail.endswith("(at `return dout @ W, x.T @ dout, dout.sum(axis=0)  "
                           "# G W instead of G W^T: shapes clash`)")
    assert "Traceback" not in str(report)


def test_using_puts_the_package_functions_back_whatever_happens():
    originals = L.dense_backward, G.merge_forward, S.ladder_step_backward

    def interrupted(dout, cache):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        grade(["dense"], using={"layers.dense_backward": interrupted,
                                "gaussian.merge_forward": _stub})
    grade(["merge"], using={"gaussian.merge_forward": _stub,
                            "steps.ladder_step_backward": _stub})
    assert (L.dense_backward, G.merge_forward, S.ladder_step_backward) == originals


def test_using_reaches_the_composites_and_models_built_on_the_op():
    seen, right = [], L.dense_backward

    def dense_backward(dout, cache, **kwargs):
        seen.append(dout.shape)
        return right(dout, cache, **kwargs)

    mine = {"layers.dense_backward": dense_backward}
    # It calls the package's own dense_backward: a course would refuse it.
    assert grade(["dense"], using=mine).status("dense") == "not the student's code"
    assert not seen
    assert grade(["dense"], using=mine, allow_package=True).passed
    calls = len(seen)
    assert calls > 0 and grade(["mlp-nobn"], using=mine, allow_package=True).passed
    assert len(seen) == calls  # graded on its own: the block's own functions only
    assert grade(["mlp-nobn"], using=mine, allow_package=True, together=True).passed
    assert len(seen) > calls  # together: the block runs the dense_backward given
    out, cache = find_case("dense").forward(*find_case("dense").inputs())
    with grading.replaced(mine):
        find_case("dense").backward(out, cache)  # the case calls through the module
    assert len(seen) > calls + 1


def test_using_refuses_what_names_no_function_in_one_line():
    with pytest.raises(ValueError, match=r"lvae_np.layers has no function 'batchnom_backward' "
                                         r"\(close: layers.batchnorm_backward"):
        grade(["dense"], using={"layers.batchnom_backward": _stub})
    with pytest.raises(ValueError, match="not 'module.function'"):
        grade(["dense"], using={"batchnorm_backward": _stub})
    with pytest.raises(ValueError, match="no module 'layer'"):
        grade(["dense"], using={"layer.dense_backward": _stub})
    with pytest.raises(TypeError, match="is a int, not a function"):
        grade(["dense"], using={"layers.dense_backward": 3})


def test_every_op_a_case_calls_is_among_those_it_uses():
    """The blocking is right: a case's run calls no op outside what it uses (transitively)."""
    owners = {}
    for case in CASES:
        if case.kind == "op":
            for key in case.functions():
                owners.setdefault(key, set()).add(case.name)
    by_name = {c.name: c for c in CASES}

    def closure(case):
        found, todo = set(), list(case.uses)
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo += list(by_name[name].uses)
        return found

    for case in CASES:
        called = set()

        def recording(key, function):
            def record(*args, **kwargs):
                called.add(key)
                return function(*args, **kwargs)
            return record

        spies = {k: recording(k, getattr(importlib.import_module(f"lvae_np.{k.split('.')[0]}"),
                                         k.split(".")[1])) for k in owners}
        with grading.replaced(spies):
            inputs = case.inputs(seed=1)
            out, cache = case.forward(*inputs)
            case.backward(gradcheck.random_like(out, np.random.default_rng(0)), cache)
        used = closure(case)
        stray = [k for k in called - set(case.functions()) if not owners[k] & used]
        assert not stray, f"{case.name} calls {stray}: add their cases to its uses"
        assert called or not case.uses, case.name  # the spies see the calls


def test_register_refuses_a_use_of_an_unregistered_case(monkeypatch):
    monkeypatch.setattr(cases, "CASES", list(CASES))
    with pytest.raises(ValueError, match="uses nosuch: register those first"):
        cases.register(Case("softplus-twice", L.softplus_forward, L.softplus_backward,
                            lambda rng: [rng.normal(size=(3, 2))], module="layers",
                            uses=("softplus", "nosuch")))


def test_cli_grade_prints_the_table_and_exits_one_on_a_failure(capsys, monkeypatch):
    assert main(["--grade", "batchnorm", "merge"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("score 10 / 10: 2 passed")  # 6 + 4, as assigned

    def wrong_backward(dout, cache):  # softplus' written as sigmoid(-x)
        return (dout * L.sigmoid(-cache.x),)

    monkeypatch.setattr(L, "softplus_backward", wrong_backward)
    assert main(["--grade", "--all", "gaussian-head"]) == 1
    out = capsys.readouterr().out
    assert "softplus" in out and "FAILED" in out and "blocked by softplus (0 / 2 points): " \
        "gaussian-head" in out
    assert main(["--grade", "nosuch"]) == 2
    assert capsys.readouterr().err.startswith("lvae_np.gradcheck: error: unknown op 'nosuch'")


def test_cli_grade_counts_the_assigned_cases_unless_all(capsys):
    from lvae_np.gradcheck import points

    assert main(["--grade"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith(f"score 36 / 36: {len(points.CASE_POINTS)} passed; "
                                           "checked first, no points here: ")
    rows = {line.split()[0]: line.split()[1:-2] for line in out.splitlines()[2:-2]}
    assert rows["batchnorm"] == ["6", "/", "6"] and rows["softplus"] == ["(used)"]
    assert "sigmoid" not in rows and "tile-rows" not in rows  # no assignment uses them
    assert main(["--grade", "--all"]) == 0
    out = capsys.readouterr().out
    course = [c for c in CASES if c.course]
    total = sum(points.CASE_POINTS.get(c.name, c.points) for c in course)
    assert out.splitlines()[-1].startswith(f"score {total} / {total}: {len(course)} passed (")
    rows = {line.split()[0]: line.split()[1:-2] for line in out.splitlines()[2:-2]}
    assert rows["batchnorm"] == ["6", "/", "6"] and rows["sigmoid"] == ["2", "/", "2"]


def test_check_gradients_says_when_backward_returns_nothing():
    def forgets_return(dout, cache):
        L.dense_backward(dout, cache)

    report = check_gradients(L.dense_forward, forgets_return, _dense_inputs())
    assert report.problems == ["forgets_return returned None: it must return one gradient per "
                               "input (3: x, W, b)"]
    with pytest.raises(GradientError, match="forgets_return returned None"):
        assert_gradients(L.dense_forward, forgets_return, _dense_inputs())
