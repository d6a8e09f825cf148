"""The three paraphrase backends and the filter every generated variant passes."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from consistbench.benchmark.cli import main
from consistbench.benchmark.errors import ConsistbenchError
from consistbench.benchmark.variants.generate import generate_variants
from consistbench.benchmark.variants.paraphrase import EndpointParaphraser, LocalLMParaphraser, WordNetParaphraser, clean_output


class FakeOpenAI(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible server: answers with a fixed rewrite per question."""

    requests: list[dict] = []
    replies = {"How do I copy an object in Python?": "What is the way to duplicate a Python object?"}

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        question = body["messages"][-1]["content"]
        if question == "fail":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"boom")
            return
        content = "Rewritten question: " + self.replies.get(question, question.upper())
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = HTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeOpenAI.requests.clear()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def test_endpoint_backend_speaks_openai_chat_completions(endpoint, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "secret")
    p = EndpointParaphraser(base_url=endpoint, model="my-model")
    out = p.paraphrase(["How do I copy an object in Python?"], n=2, seed=7)
    assert out == [["What is the way to duplicate a Python object?"] * 2]
    req = FakeOpenAI.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer secret"
    assert req["body"]["model"] == "my-model" and req["body"]["messages"][0]["role"] == "system"
    assert FakeOpenAI.requests[0]["body"]["seed"] != FakeOpenAI.requests[1]["body"]["seed"]


def test_endpoint_errors_are_clear(endpoint):
    with pytest.raises(ConsistbenchError, match="answered HTTP 500"):
        EndpointParaphraser(base_url=endpoint, model="m").paraphrase(["fail"])
    with pytest.raises(ConsistbenchError, match="failed"):
        EndpointParaphraser(base_url="http://127.0.0.1:9/v1", model="m", timeout=2).paraphrase(["x"])


@pytest.mark.slow
def test_wordnet_backend_is_deterministic_and_keeps_code_names():
    p = WordNetParaphraser()
    qs = ["How do I copy an object in Python?", "What does shutil.copyfile return?"]
    a = p.paraphrase(qs, n=3, seed=1)
    assert a == p.paraphrase(qs, n=3, seed=1)
    assert a != p.paraphrase(qs, n=3, seed=2)
    assert all("shutil.copyfile" in t for t in a[1])
    assert any(t != qs[0] for t in a[0])


@pytest.mark.slow
def test_local_lm_backend_is_deterministic_for_a_seed(tiny_llama_dir):
    p = LocalLMParaphraser(model=str(tiny_llama_dir), max_new_tokens=8, batch_size=2)
    qs = ["How do I copy a list?", "What does str.split return?", "Why are strings immutable?"]
    a = p.paraphrase(qs, n=2, seed=0)
    assert len(a) == 3 and all(len(x) == 2 for x in a)
    assert a == p.paraphrase(qs, n=2, seed=0)


def test_clean_output():
    assert clean_output('\n"Rewritten question: How to X?"\nmore') == "How to X?"
    assert clean_output("   ") == ""


class Scripted:
    """A paraphraser with fixed proposals, to test the filter alone."""

    name = "scripted"

    def __init__(self, proposals):
        self.proposals = proposals

    def paraphrase(self, questions, n=1, seed=0):
        return [list(self.proposals[q]) for q in questions]

    def describe(self):
        return {"name": "scripted"}


def test_filter_rejects_empty_identical_rule_only_and_meaning_changes():
    q = "How do I copy an object in Python?"
    p = Scripted({q: ["", q, "how do i copy an object in python", "How do I copy objects in Python?",
                      "What is the capital of France?", "What is the way to make a duplicate of a Python object?"]})
    out = generate_variants([q], ["paraphrase"], n=3, paraphraser=p)
    assert [v.question for v in out] == ["What is the way to make a duplicate of a Python object?"]
    assert out[0].cosine >= 0.6 and out[0].generator["type"] == "paraphrase"


def test_rule_variants_are_deterministic_and_valid():
    qs = ["How do I copy a file?", "How can I create a child process?", "What does shutil.copyfile return?"]
    a = generate_variants(qs, ["how_to", "plural_article"], n=2, seed=5)
    assert a == generate_variants(qs, ["how_to", "plural_article"], n=2, seed=5)
    kinds = {(v.index, v.variant_type) for v in a}
    assert (0, "how_to") in kinds and (1, "plural_article") in kinds
    assert (2, "how_to") not in kinds  # not a how-to question
    assert sum(1 for v in a if (v.index, v.variant_type) == (0, "how_to")) == 2


def test_unknown_type_and_missing_paraphraser():
    with pytest.raises(ConsistbenchError, match="unknown variant type"):
        generate_variants(["q?"], ["synonym"])
    with pytest.raises(ConsistbenchError, match="need a paraphraser"):
        generate_variants(["q?"], ["paraphrase"])


def test_variants_cli_writes_groups_with_provenance(tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "q1", "question": "How do I copy a file?", "team": "x"}) + "\n"
                   + json.dumps({"question": "How can I create a child process?"}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["variants", str(inp), "-o", str(out), "--types", "how_to,plural_article,paraphrase",
                 "--paraphraser", "wordnet", "--seed", "3"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0] == {"id": "q1", "question": "How do I copy a file?", "team": "x", "group_id": "q1", "variant_type": "original"}
    assert {r["variant_type"] for r in rows if r["group_id"] == "q1"} >= {"original", "how_to", "plural_article"}
    gen = [r["generator"] for r in rows if r["variant_type"] != "original"]
    assert all({"type", "seed", "backend", "cosine"} <= set(g) for g in gen)
    assert len({r["id"] for r in rows}) == len(rows)


def test_variants_cli_bad_input(tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "q1"}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["variants", str(inp), "-o", str(out), "--types", "how_to"]) == 2
    assert "in.jsonl:1: missing or empty field 'question'" in capsys.readouterr().err
    assert not out.exists()
