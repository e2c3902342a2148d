"""The claims table: a verdict only where every seed agrees, and the numbers behind it.

Each of these bugs makes a test here fail: a verdict taken from the mean
when the seeds split, a paired difference within two standard errors counted
as a win, the units or KL of z1 counted as "higher layers", one seed judged
as if it were several, and the VAE and LVAE of different seeds compared.
"""
from types import SimpleNamespace

import pytest

from lvae_np.experiments import RunSpec
from lvae_np.experiments.claims import FAILS, HOLDS, UNSURE, format_claims_markdown, judge_claims
from lvae_np.experiments.report import paired_differences


def record(model, seed, per_example, kl, units, bn=True, wu=True):
    ev = dict(lk=sum(per_example) / len(per_example), lk_per_example=per_example, kl=kl,
              active_units_kl=units, limit=None, subset=100, subset_seed=0, split_size=1000,
              epoch=10)
    return SimpleNamespace(spec=RunSpec.paper("mnist", model, 3, batch_norm=bn, warmup=wu),
                           seed=seed, eval=ev, run_id=f"{model}-{seed}")


def judged(records):
    claims = judge_claims(records, paired_differences(records))
    return {c["claim"].split(" (")[0]: c for c in claims}


BASE = [-90.0, -80.0, -85.0, -95.0]


def test_a_claim_holds_only_when_every_seed_agrees():
    records = []
    for seed, lead in ((0, 0.5), (1, 0.7), (2, 0.4)):
        records += [record("vae", seed, BASE, [20.0, 2.0, 0.5], [40, 3, 1]),
                    record("lvae", seed, [v + lead + 0.01 * i for i, v in enumerate(BASE)],
                           [15.0, 6.0, 1.5], [30, 6, 2])]
    got = judged(records)
    lk = got["the LVAE's log-likelihood"]
    assert lk["verdict"] == HOLDS and lk["seeds"] == [0, 1, 2]
    assert lk["evidence"][1].startswith("seed 1: +0.7")
    units = got["the LVAE keeps more active units in its higher layers"]
    # z2 and up only: 8 against 4, though z1 has 30 against 40
    assert units["verdict"] == HOLDS and units["evidence"][0] == "seed 0: LVAE 8, VAE 4"
    share = got["the LVAE spreads its KL over more layers"]
    assert share["verdict"] == HOLDS and share["evidence"][0] == "seed 0: LVAE 33%, VAE 11%"
    lines = format_claims_markdown(list(got.values()), 5000)
    assert any("| **holds** | 3 |" in line for line in lines)


def test_seeds_that_split_cannot_tell_and_unanimous_contradiction_does_not_hold():
    records = []
    for seed, lead in ((0, 0.5), (1, -0.6)):          # the seeds split on L_K
        records += [record("vae", seed, BASE, [20.0, 6.0, 1.0], [40, 9, 2]),
                    record("lvae", seed, [v + lead + 0.01 * i for i, v in enumerate(BASE)],
                           [20.0, 1.0, 0.0], [40, 2, 0])]
    got = judged(records)
    assert got["the LVAE's log-likelihood"]["verdict"] == UNSURE
    assert got["the LVAE keeps more active units in its higher layers"]["verdict"] == FAILS
    assert got["the LVAE spreads its KL over more layers"]["verdict"] == FAILS


@pytest.mark.parametrize("noise", [3.0])
def test_a_difference_within_two_standard_errors_is_no_win(noise):
    records = []
    for seed in (0, 1, 2):
        # a mean lead of 0.1 with image-by-image differences of +-noise: s.e. noise / 2
        lvae = [v + 0.1 + (noise if i % 2 else -noise) for i, v in enumerate(BASE)]
        records += [record("vae", seed, BASE, [20.0, 2.0, 0.5], [40, 3, 1]),
                    record("lvae", seed, lvae, [15.0, 6.0, 1.5], [30, 6, 2])]
    assert judged(records)["the LVAE's log-likelihood"]["verdict"] == UNSURE


def test_one_seed_cannot_tell_and_pairs_stay_within_a_seed():
    records = [record("vae", 0, BASE, [20.0, 2.0, 0.5], [40, 3, 1]),
               record("lvae", 1, [v + 5 for v in BASE], [15.0, 6.0, 1.5], [30, 6, 2]),
               record("lvae", 0, [v + 5 + 0.01 * i for i, v in enumerate(BASE)],
                      [15.0, 6.0, 1.5], [30, 6, 2])]
    got = judged(records)
    assert all(c["verdict"] == UNSURE and c["seeds"] == [0] for c in got.values())


def test_batch_norm_and_warmup_against_the_runs_without_them():
    records = []
    for seed in (0, 1):
        for model in ("vae", "lvae"):
            for bn, wu, shift in ((True, True, 0.0), (True, False, -1.0), (False, True, -2.0),
                                  (False, False, -9.0)):
                records.append(record(model, seed, [v + shift for v in BASE],
                                      [20.0, 2.0, 0.5], [40, 3, 1], bn=bn, wu=wu))
    needed = judged(records)["batch norm and warm-up are both needed"]
    assert needed["verdict"] == HOLDS and needed["seeds"] == [0, 1]
    assert "LVAE seed 0: BN + WU ahead of the best without by +1.00" in needed["evidence"]
