"""The paper's claims, each judged from the runs of every seed: holds, does not hold, cannot tell.

Sønderby et al. claim that, with batch norm (BN) and warm-up (WU), the LVAE
beats the VAE for two or more stochastic layers; that BN and WU are needed to
train deep models; that the LVAE keeps more latent units active in its higher
layers; and that it spreads its KL over more layers. ``judge_claims`` checks
each against the evaluated runs, seed by seed, with one rule for all:

- a claim **holds** when every seed agrees with it (for L_K: the paired
  difference is beyond two of its standard errors in the claim's direction);
- it **does not hold** when every seed contradicts it (in the same sense);
- otherwise, or with fewer than two seeds, the runs **cannot tell**.

Unanimity over a few seeds is a strict test on purpose: a claim the seeds
split on is not shown, whatever the mean says. Active units are those whose
KL averages above 0.01 nats (``metrics.kl_active_units``); "higher layers"
are z_2 and up.
"""
from __future__ import annotations

HOLDS, FAILS, UNSURE = "holds", "does not hold", "cannot tell"
MIN_SEEDS = 2


def verdict(signs: list) -> str:
    """+1 (agrees), -1 (contradicts) or 0 (neither) per seed -> the verdict."""
    if len(signs) < MIN_SEEDS:
        return UNSURE
    if all(s > 0 for s in signs):
        return HOLDS
    if all(s < 0 for s in signs):
        return FAILS
    return UNSURE


def sign(value: float, margin: float = 0.0) -> int:
    """+1 beyond ``margin`` in favour of the claim, -1 beyond it against, else 0."""
    return 1 if value > margin else -1 if value < -margin else 0


def _config(spec) -> tuple:
    """What, besides the model, sets a run apart within an experiment: KL, preset, choices."""
    return spec.kl, spec.preset, tuple(spec.choices)


def _describe(config: tuple) -> str:
    kl, preset, choices = config
    return ", ".join([f"{kl} KL"] + ([f"preset {preset}"] if preset else []) + list(choices))


def _by_seed(records: list, dataset: str, layers: int, bn: bool, wu: bool,
             config: tuple | None = None) -> dict:
    """{seed: {model: evaluation}} of the evaluated runs with these settings."""
    out = {}
    for rec in records:
        s = rec.spec
        if (s.dataset, s.layers, s.batch_norm, s.warmup) == (dataset, layers, bn, wu) \
                and (config is None or _config(s) == config) \
                and rec.eval and rec.eval.get("kl"):
            out.setdefault(rec.seed, {})[s.model] = rec.eval
    return {seed: pair for seed, pair in sorted(out.items()) if len(pair) == 2}


def higher_units(ev: dict) -> int:
    """An evaluation's units with KL > 0.01 above z1."""
    return sum(ev["active_units_kl"][1:])


def share_above_z1(kl: list) -> float:
    """The share of a KL per layer (z1 first) above z1; 0 for no KL."""
    total = sum(kl)
    return sum(kl[1:]) / total if total > 0 else 0.0


def _kl_share_above_z1(ev: dict) -> float:
    return share_above_z1(ev["kl"])


# Claims that compare one number of each model's evaluation, seed by seed (LVAE > VAE):
# (claim, the number, its format in the evidence).
PER_MODEL_CLAIMS = (
    ("the LVAE keeps more active units in its higher layers (z2 and up)", higher_units, "d"),
    ("the LVAE spreads its KL over more layers (share of the KL above z1)", _kl_share_above_z1,
     ".0%"),
)


def judge_claims(records: list, paired: list) -> list:
    """Each claim that the runs bear on: dicts with claim, setting, verdict, evidence, seeds.

    Args:
        records: the runs (``RunRecord``) with their evaluations and seeds.
        paired: ``report.paired_differences(records)``.

    Returns:
        One dict per claim and setting (dataset and depth), in the paper's order.
        ``evidence`` is a list of per-seed phrases, ``seeds`` the seeds behind it.
    """
    out = []
    settings = sorted({(r.spec.dataset, r.spec.layers, _config(r.spec)) for r in records
                       if r.spec.layers >= 2}, key=lambda s: (s[0], s[1], str(s[2])))
    several = len({c for _, _, c in settings}) > 1   # then each setting names its configuration
    for dataset, layers, config in settings:
        where = f"{dataset}, {layers} layers" + (f" ({_describe(config)})" if several else "")
        diffs = sorted((q["seed"], q) for q in paired
                       if (q["dataset"], q["layers"], q["batch_norm"], q["warmup"])
                       == (dataset, layers, True, True)
                       and (q["kl"], q["preset"], tuple(q.get("choices", ()))) == config)
        if diffs:
            out.append(dict(
                claim="the LVAE's log-likelihood (L_K) beats the VAE's", setting=where,
                verdict=verdict([sign(q["diff"], 2 * q["diff_stderr"]) for _, q in diffs]),
                seeds=[s for s, _ in diffs],
                evidence=[f"seed {s}: {q['diff']:+.2f} ({q['diff_stderr']:.2f})"
                          for s, q in diffs]))
        both = _by_seed(records, dataset, layers, True, True, config)
        for claim, measure, fmt in PER_MODEL_CLAIMS:
            if both:
                values = {s: (measure(p["lvae"]), measure(p["vae"])) for s, p in both.items()}
                out.append(dict(
                    claim=claim, setting=where,
                    verdict=verdict([sign(a - b) for a, b in values.values()]),
                    seeds=list(values),
                    evidence=[f"seed {s}: LVAE {a:{fmt}}, VAE {b:{fmt}}"
                              for s, (a, b) in values.items()]))
        needed = _bn_wu_needed([r for r in records if _config(r.spec) == config], dataset,
                               layers)
        if needed is not None:
            out.append(dict(claim="batch norm and warm-up are both needed", setting=where,
                            **needed))
    return out


def _bn_wu_needed(records: list, dataset: str, layers: int) -> dict | None:
    """BN + WU against each setting without one of them, per model and seed (L_K)."""
    lk = {}
    for rec in records:
        s = rec.spec
        if (s.dataset, s.layers) == (dataset, layers) and rec.eval \
                and rec.eval.get("lk") is not None:
            lk[s.model, rec.seed, s.batch_norm, s.warmup] = rec.eval["lk"]
    signs, evidence, seeds = [], [], set()
    for (model, seed, bn, wu), best in sorted(lk.items()):
        if not (bn and wu):
            continue
        others = [lk[k] for k in ((model, seed, b, w) for b, w in
                                  ((True, False), (False, True), (False, False))) if k in lk]
        if not others:
            continue
        margin = best - max(others)
        signs.append(sign(margin))
        seeds.add(seed)
        evidence.append(f"{model.upper()} seed {seed}: BN + WU ahead of the best without "
                        f"by {margin:+.2f}")
    if not signs:
        return None
    result = verdict(signs) if len(seeds) >= MIN_SEEDS else UNSURE
    return dict(verdict=result, evidence=evidence, seeds=sorted(seeds))


def format_claims_markdown(claims: list, k: int) -> list:
    """The lines of results.md's claims table (none when there are no claims)."""
    if not claims:
        return []
    lines = ["", f"The paper's claims (L_{k}, paired LVAE - VAE per seed with its standard "
             "error over the test examples; units with KL > 0.01 nats). A claim holds when "
             "every seed agrees with it (for L_K: by more than two standard errors), does "
             "not hold when every seed contradicts it, and otherwise the runs cannot tell:",
             "", "| claim | setting | verdict | seeds | per seed |", "|---|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c['claim']} | {c['setting']} | **{c['verdict']}** | "
                     f"{len(c['seeds'])} | {'; '.join(c['evidence'])} |")
    return lines
