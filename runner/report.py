"""What a person reads at the end of a run: the one summary line every run prints and, for a
single run, a short table."""
from __future__ import annotations

from runner.identity import model_label


def summary_line(exp, job, out, run_id: str | None) -> str:
    """The one line every run prints: `runner: [job i/n ]model/guide <numbers> run_id=...`."""
    what = f"{model_label(exp, job.choices)}/{exp.inference.label(job.choices)}"
    where = f"run_id={run_id}" if run_id else f"outputs={job.run_dir}"
    return f"runner: {job.label}{what} {out.line} {where}"


def summary_table(exp, job, record, run_id: str | None, look: str | None) -> str:
    """A short table for a person at the end of a single run (sweeps keep to one line per job):
    `record` is the run's runner.tracking.base.RunRecord."""
    s, choices, name = record.scalars, job.choices, record.name
    rows = [("run", f"{name}  ({run_id})" if run_id else name),
            ("choices", " ".join(f"{g}={choices[g]}" for g in exp.inference.groups if choices.get(g))),
            *([("final_loss", f"{s['final_loss']:.6g}")] if "final_loss" in s else []),
            *([("avg_loglik", f"{s['avg_loglik']:.6g}")] if "avg_loglik" in s else []),
            *([("best_restart", f"{s['best_restart']:.0f} of {exp.restarts}")] if "best_restart" in s else []),
            *diagnostic_rows(s, record.tags),
            ("outputs", str(job.run_dir)),
            *([("look", look)] if look else [])]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def diagnostic_rows(s: dict, tags: dict) -> list[tuple[str, str]]:
    """Did it work? k-hat, NUTS's chains, restart agreement, early stopping, for the summary table."""
    rows = []
    if "psis_verdict" in tags:
        k = f"{s['psis_khat']:.3g}" if "psis_khat" in s else "n/a"
        rows.append(("psis_khat", f"{k} ({tags['psis_verdict']}; {s['psis_draws']:.0f} draws)"))
    if "nuts_verdict" in tags:
        rows.append(("chains", f"{tags['nuts_verdict']} (max R-hat {s['max_r_hat']:.4g}, min n_eff "
                               f"{s['min_n_eff']:.4g}, {s['divergences']:.0f} divergences)"))
    if "restart_agreement" in tags:
        rhat = f", R-hat {s['restart_rhat']:.3g}" if "restart_rhat" in s else ""
        rows.append(("restarts", f"{tags['restart_agreement']} (best {s['restarts_compared']:.0f}: losses within "
                                 f"{s['restart_loss_spread']:.3g} noise sd of the best{rhat}; "
                                 f"{s['restarts_at_best']:.0f} of {s['restarts_finite']:.0f} at the best loss)"))
    if "sbc_verdict" in tags:
        rows.append(("calibration", f"{tags['sbc_verdict']} ({s['sbc_simulations']:.0f} simulations, "
                                    f"{s['sbc_draws']:.0f} draws each; {tags.get('sbc_fit', '')}, "
                                    f"{s['sbc_seconds']:.3g}s): sbc.json, plots/sbc_ecdf.png"))
    if "converged" in tags:
        rows.append(("stopped", f"step {s['stop_step']:.0f}; {s['restarts_converged']:.0f} restarts converged"
                     if tags["converged"] == "yes" else
                     f"not converged: {s['restarts_converged']:.0f} restarts stopped before the last step"))
    return rows
