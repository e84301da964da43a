"""The GPU check (scripts/gpu-check.sh runs it): everything that can be measured on a GPU machine
with PyTorch + CUDA and cuda-python but possibly no TensorRT, no network and nothing installed
from this project, in one run well under 10 minutes:

1. parity: the reference model in fp32 (TF32 off and on), fp16 and bf16 on CUDA against itself in
   fp32 on the CPU: centered cosine (worst image), top-5 agreement, token centered cosine, max abs;
2. baselines: `transformers` IJepaModel (SDPA) and the reference model in fp16/bf16 at batch
   1/8/64, images/s, interleaved rounds (A B C A B C), median;
3. cuda-python: our backend's stream, pinned buffers, device copies and CUDA-graph capture/replay
   (runtime/backends/tensorrt_cuda.py), checked for exact bytes;
4. TensorRT, only where it imports: the GPU tests (build, gate, run, stripped plans, CUDA graphs).
It writes benchmarks/gpu-<gpu>.{json,md}. Run as a script from a checkout: the `ijepa_deploy`
packages are mapped onto the checkout's folders (pyproject's package-dir) without installing and
without running package __init__ files that need packages the GPU machine may lack.
"""

from __future__ import annotations

import json
import logging
import platform
import re
import sys
import time
import types
from pathlib import Path

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


def package_dirs(pyproject_text: str) -> dict[str, str]:
    """[tool.setuptools.package-dir] of pyproject.toml: {'ijepa_deploy.runtime': 'runtime', ...}."""
    section = re.search(r"^\[tool\.setuptools\.package-dir\]\s*$(.*?)(?=^\[|\Z)", pyproject_text, re.M | re.S)
    if not section:
        return {}
    return dict(re.findall(r'^\s*"([\w.]+)"\s*=\s*"([^"]+)"', section.group(1), re.M))


def map_checkout(root: Path = ROOT) -> dict[str, Path]:
    """Make `ijepa_deploy.*` import from the checkout at `root`: each package becomes a bare module
    whose __path__ is its folder (its __init__ is not run), so submodules load on their own."""
    dirs = {name: root / folder for name, folder in package_dirs((root / "pyproject.toml").read_text()).items()}
    top = types.ModuleType("ijepa_deploy")
    top.__path__ = []
    sys.modules.setdefault("ijepa_deploy", top)
    for name, folder in sorted(dirs.items()):
        module = types.ModuleType(name)
        module.__path__ = [str(folder)]
        sys.modules[name] = module
    return dirs


def _fmt(value, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def render_markdown(result: dict) -> str:
    g = result["gpu"]
    lines = [f"# GPU check: {g.get('name', '?')} ({result['created']})", "",
             f"GPU {g.get('name')} (compute capability {g.get('compute_capability')}, {g.get('memory_gb')} GB); "
             f"torch {g.get('torch')}, CUDA {g.get('cuda')}, cuda-python {g.get('cuda_python')}, "
             f"transformers {g.get('transformers')}, TensorRT {g.get('tensorrt')}; {result['seconds']:.0f} s in all", ""]
    parity = result.get("parity") or {}
    if parity.get("rows"):
        lines += [f"## Reference model on CUDA vs CPU fp32 ({parity['model']}, {parity['images']} {parity['inputs']})",
                  "", "| precision | centered cos (worst) | top-5 agreement | token centered cos | max abs | verdict |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['precision']} | {_fmt(r['centered_cosine'], '.6f')} | {_fmt(r['top5_agreement'], '.3f')} | "
                  f"{_fmt(r.get('token_centered_cosine'), '.6f')} | {_fmt(r.get('max_abs'), '.3g')} | {r['verdict']} |"
                  for r in parity["rows"]]
        lines.append("")
    base = result.get("baselines") or {}
    if base.get("rows"):
        lines += [f"## Throughput ({base['model']}, {base['resolution']}px, median of {base['rounds']} interleaved "
                  "rounds)", "", "| path | batch | images/s | ms/batch |", "|---|---|---|---|"]
        lines += [f"| {r['path']} | {r['batch']} | {_fmt(r['images_per_s'], '.1f')} | {_fmt(r['ms'], '.2f')} |"
                  for r in base["rows"]]
        lines.append("")
    cuda = result.get("cuda_python") or {}
    if cuda.get("checks"):
        lines += ["## cuda-python half of the TensorRT backend", "", "| check | result |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in cuda["checks"].items()]
        lines.append("")
    trt = result.get("tensorrt") or {}
    lines += ["## TensorRT", "", trt.get("summary", "not run"), ""]
    if result.get("skipped"):
        lines += ["## Skipped", ""] + [f"- {s}" for s in result["skipped"]] + [""]
    return "\n".join(lines)


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "machine": platform.machine()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(name=props.name, compute_capability=f"{props.major}.{props.minor}",
                   memory_gb=round(props.total_memory / 2**30, 1))
    for module, key in (("cuda.bindings", "cuda_python"), ("transformers", "transformers"), ("tensorrt", "tensorrt")):
        try:
            env[key] = getattr(__import__(module, fromlist=["x"]), "__version__", "present")
        except Exception as exc:  # absent, or present but broken: say which
            env[key] = f"absent ({type(exc).__name__})"
    return env


def no_cuda_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return f"{sys.executable} has no torch"
    if not torch.cuda.is_available():
        return (f"torch {torch.__version__} in {sys.executable} sees no CUDA device "
                "(torch.cuda.is_available() is False): run it on a GPU machine")
    return None


def run(out_dir: Path, budget_s: float, variant: str, images: int, device: str = "cuda", per_round: float = 0.6) -> dict:
    from . import gpu_sections as sections

    start = time.perf_counter()
    result = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "gpu": environment(), "skipped": [],
              "command": " ".join(sys.argv), "checkout": str(ROOT),
              "modules_from": str(Path(sys.modules["ijepa_deploy.bench"].__path__[0]).parent)}

    def left() -> float:
        return budget_s - (time.perf_counter() - start)

    gpu_only = {"skipped": [f"a dry run on {device}: no GPU sections"]}
    for key, section in (("parity", lambda: sections.parity(variant, images, left, device)),
                         ("baselines", lambda: sections.baselines(variant, left, device, per_round=per_round)),
                         ("cuda_python", sections.cuda_python if device == "cuda" else lambda: dict(gpu_only)),
                         ("tensorrt", (lambda: sections.tensorrt(ROOT, left)) if device == "cuda"
                          else lambda: {"summary": "not run (dry run)", **gpu_only})):
        if left() < 30:
            result["skipped"].append(f"{key}: the time budget ({budget_s:.0f} s) is spent")
            continue
        try:
            result[key] = section()
        except Exception as exc:  # one section failing must not lose the others' figures
            log.exception("%s failed", key)
            result[key] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            result["skipped"].append(f"{key}: failed with {type(exc).__name__}: {str(exc)[:200]}")
        result["skipped"] += result[key].pop("skipped", []) if isinstance(result[key], dict) else []
    result["skipped"] = list(dict.fromkeys(result["skipped"]))
    result["seconds"] = time.perf_counter() - start
    from ijepa_deploy.contract.naming import gpu_slug  # after map_checkout: imports nothing but the stdlib

    name = gpu_slug(result["gpu"].get("name", "gpu"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"gpu-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"gpu-{name}.md").write_text(render_markdown(result))
    print(f"results: {out_dir / f'gpu-{name}'}.{{json,md}} (commit them)")
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks"), help="where gpu-<gpu>.{json,md} go")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all sections (default 480)")
    parser.add_argument("--variant", default="vith14", help="registry variant (random weights), default vith14")
    parser.add_argument("--images", type=int, default=16, help="images for the parity check (default 16)")
    parser.add_argument("--per-round", type=float, default=0.6, help="seconds per timed block (default 0.6)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: a dry run of the measuring code (tests), e.g. with --variant test-tiny-p14")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reason = no_cuda_reason() if args.device == "cuda" else None
    if reason:
        print(f"gpu-check: {reason}", file=sys.stderr)
        return 1
    run(Path(args.out), args.budget, args.variant, args.images, args.device, args.per_round)
    return 0


if __name__ == "__main__":
    map_checkout()
    __package__ = "ijepa_deploy.bench"
    sys.modules.setdefault("ijepa_deploy.bench.gpu_check", sys.modules[__name__])
    sys.exit(main())
