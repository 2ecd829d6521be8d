"""What SVI and NUTS leave of a point estimate of the latent sites: latents.json, the MAP
assignments of the enumerated sites and, for mixture families (EM's protocol), avg_loglik on the
same scale as EM's."""
from __future__ import annotations

from pathlib import Path

from runner.inference import em


def discrete_outputs(exp, latents: dict, run_dir: Path, scalars: dict, extra: dict | None = None) -> list[str]:
    """latents.json (the point estimate of the global latent sites), assignments.json (MAP
    values of the enumerated sites from infer_discrete) and avg_loglik for mixture families."""
    from runner import posterior
    from runner.outputs import to_lists, write_json

    files = [write_json(run_dir / "latents.json", to_lists(latents))]
    if exp.data is None:
        return files
    if em.supports(exp.model):
        scalars["avg_loglik"] = em.average_loglik(exp.model, latents, exp.data)
    found = extra if extra is not None else posterior.assignments(exp.model, latents, exp.data)
    if found:
        files.append(write_json(run_dir / "assignments.json", to_lists(found)))
    return files
