"""The data v2 audit rules, each on hand-made pairs it must flag and pairs it must let through."""

from __future__ import annotations

import pytest

from consistbench.benchmark import audit_rules as R
from consistbench.benchmark.audit import audit_rows
from consistbench.benchmark.schema import load_data
from tests.conftest import make_row, write_jsonl


def rules(problems) -> set[str]:
    return {p.rule for p in problems}


# --------------------------------------------------------------------------------------------
# polarity: a wh-question may not become a yes/no question or an either/or choice

@pytest.mark.parametrize("original, variant", [
    ("What does dry_run do in shutil.make_archive()?", "With dry_run=True, does shutil.make_archive() write any file?"),
    ("How does Python treat signaling NaNs?", "Is there any difference in Python between a signaling NaN and a quiet NaN?"),
    # the yes/no clause behind an opening adverbial clause
    ("What is the initial state of an asyncio.Event's flag?",
     "When an asyncio.Event is created, is its internal flag set?"),
    # either/or: the alternatives are put into the question
    ("When should I use logging.info() instead of print()?",
     "Which tool should report normal-operation events, print() or logging.info()?"),
    ("How do I copy an object in Python?", "What's the general way to duplicate a Python object, shallow or deep?"),
])
def test_polarity_flags_wh_to_yes_no_and_either_or(original, variant):
    assert rules(R.check_polarity(original, variant)) == {"paraphrase_polarity"}


@pytest.mark.parametrize("original, variant", [
    ("What does shutil.copyfile return?", "Which value does shutil.copyfile give back?"),
    ("In Python, what is a class?", "What exactly does the term class refer to in Python?"),
    ("What is a class?", "In Python, what exactly does the term class refer to?"),  # fronted phrase, then wh
    ("How do I copy a list?", "Is there a way to duplicate a list?"),  # a how-to form of the closed list
    ("Is there a Python tutorial?", "Where can I find a tutorial for learning Python?"),  # yes/no -> wh is not this rule
    ("How do I accept a list of integers with argparse?",
     "With argparse, which add_argument call collects one or more ints?"),  # "one or more" is no choice
    ("How do I get an object's annotations in Python 3.9?",
     "On Python 3.9, what code gets an object's annotations whether or not it is a class?"),
])
def test_polarity_lets_same_type_questions_through(original, variant):
    assert R.check_polarity(original, variant) == []


def test_question_kind():
    assert R.question_kind("What does X return?") == "wh"
    assert R.question_kind("In which order does a PriorityQueue return entries?") == "wh"
    assert R.question_kind("Does X return None?") == "yes_no"
    assert R.question_kind("If I close the file, is the socket closed too?") == "yes_no"
    assert R.question_kind("I’ve never programmed before. Is there a Python tutorial?") == "yes_no"
    assert R.question_kind("Python reports 2.2+; what does the plus mean?") == "wh"
    assert R.question_kind("Tell me about sockets.") == "other"


# --------------------------------------------------------------------------------------------
# sub-question: no second question joined on

@pytest.mark.parametrize("original, variant", [
    ("What types of values can a multiprocessing ShareableList store?",
     "Which Python value types may be placed in a shared_memory.ShareableList, and can an entry's type be changed?"),
    ("What exceptions can loop.add_signal_handler raise?", "Which errors might be thrown by loop.add_signal_handler, and when?"),
    ("What happens if Morsel.update() is given an invalid key?", "What does Morsel.update() do with an invalid key, or does it raise?"),
    ("Why does X fail?", "What makes X fail? How do I fix it?"),
])
def test_sub_question_flags_a_second_question(original, variant):
    assert rules(R.check_sub_question(original, variant)) == {"paraphrase_sub_question"}


@pytest.mark.parametrize("original, variant", [
    ("Why set default=0 on an argparse count option?",
     "What goes wrong if a count option has no default and is compared with an integer?"),  # a verb phrase
    ("What is a positive lookahead assertion?", "What does a positive lookahead (?=...) do in a regex?"),  # '?' in code
    ("Which places does ConfigParser.get search, and in what order?",
     "In what order, and in which places, does ConfigParser.get look up an option?"),  # the original has two as well
    ("How do I read and write a file?", "What is the way to read from and write to a file?"),
])
def test_sub_question_lets_one_question_through(original, variant):
    assert R.check_sub_question(original, variant) == []


# --------------------------------------------------------------------------------------------
# answer hint: no code token, number or rare word of the reference that the original lacks

@pytest.mark.parametrize("original, variant, reference, hint", [
    ("How often does Python have a major new release?", "On what schedule are major Python versions published since 3.9?",
     "As of version 3.9, Python will have a major new release every 12 months (PEP 602).", "3.9"),
    ("What extension syntax do Python regular expressions borrow from Perl?",
     "What does the (?...) notation mean in Python regular expressions?",
     "(?...) is the extension syntax; the characters after the ? indicate the extension.", "(?...)"),
    ("What does Logger.setLevel() specify?", "If I call setLevel(logging.INFO) on a logger, which messages does it process?",
     "The lowest-severity message a logger handles; e.g. with INFO it ignores DEBUG messages.", "info"),
    ("What does the {m,n} syntax mean in a regular expression?", "How is the regex quantifier {m,n} interpreted?",
     "The quantifier {m,n} asks for at least m and at most n repetitions.", "quantifier"),
])
def test_answer_hint_flags_tokens_taken_from_the_reference(original, variant, reference, hint):
    assert hint in R.answer_hints(original, variant, reference)
    assert rules(R.check_answer_hint(original, variant, reference)) == {"answer_hint"}


@pytest.mark.parametrize("original, variant, reference", [
    # the same identifier, written differently
    ("What does shutil.make_archive() return?", "What value comes back from make_archive in shutil?",
     "shutil.make_archive() returns the name of the archive file."),
    # a number the original says in words
    ("What does math.gcd() return when all arguments are zero?", "What is the result of math.gcd(0, 0)?",
     "If all arguments are zero, the returned value is 0."),
    # a common word the reference happens to use
    ("How do I obtain a copy of the Python source?", "Where can I download CPython's source code?",
     "The latest source distribution is available from the downloads page."),
])
def test_answer_hint_lets_rewordings_through(original, variant, reference):
    assert R.answer_hints(original, variant, reference) == []


def test_rare_word_must_also_be_rare_in_the_passages():
    original, variant = "What does the {m,n} syntax mean?", "How is the regex quantifier {m,n} interpreted?"
    reference = "The quantifier {m,n} asks for between m and n repetitions."
    common = R.PassageShare(["A quantifier repeats."] * 50 + ["Other text."] * 50)  # in half the passages
    rare = R.PassageShare(["A quantifier repeats."] + ["Other text %d." % i for i in range(199)])  # 1 of 200
    assert R.answer_hints(original, variant, reference, common) == []
    assert R.answer_hints(original, variant, reference, rare) == ["quantifier"]


# --------------------------------------------------------------------------------------------
# type shift: a how-to (procedure) question may not become a question for a name

@pytest.mark.parametrize("original, variant", [
    ("How do I copy a file?", "What function should I use to copy a file in Python?"),
    ("How do I read a plist file in Python?", "Which plistlib function parses an Apple .plist file?"),
    ("How can I capture the output of a command with subprocess.run?",
     "With subprocess.run, which argument makes it collect the command's output?"),
    ("How do I disable TLS renegotiation in the ssl module?", "Which ssl option prevents renegotiation requests?"),
])
def test_type_shift_flags_procedure_to_name(original, variant):
    assert rules(R.check_type_shift(original, variant)) == {"paraphrase_type_shift"}


@pytest.mark.parametrize("original, variant", [
    ("What does shutil.copyfile return?", "Which value does shutil.copyfile give back?"),  # not a how-to original
    ("How do I copy a file?", "What's the way to duplicate a file in Python?"),
    ("How do I copy a file?", "What steps copy a file from one place to another?"),
    ("How do I read a CSV file?", "What is the simplest code for reading the rows of a CSV file?"),
    ("How do I log variable data?", "What's the way to include variable values in a logging message?"),  # how-to form
])
def test_type_shift_lets_procedure_questions_through(original, variant):
    assert R.check_type_shift(original, variant) == []


# --------------------------------------------------------------------------------------------
# references that say nothing themselves

def test_reference_pointer_and_foreign_names():
    passage = ("How do I make an executable from a Python script? See How can I create a stand-alone binary "
               "from a Python script? for a list of tools that can be used to make executables.")
    pointer = "See the FAQ “How can I create a stand-alone binary from a Python script?” for a list of tools."
    assert rules(R.check_reference_content(pointer, passage)) == {"reference_pointer"}
    # the same words after a real answer are fine
    assert R.check_reference_content("Tools make executables; see the FAQ on stand-alone binaries.", passage) == []

    passage = "This just buffers up stuff until a newline is seen, and then logs complete lines: def write(self, message)"
    foreign = "Use BufferingLoggerWriter, whose write() buffers up stuff until a newline is seen."
    assert R.foreign_names(foreign, passage) == ["BufferingLoggerWriter"]
    assert rules(R.check_reference_content(foreign, passage)) == {"reference_foreign_name"}
    assert R.check_reference_content("Its write() buffers up stuff until a newline is seen.", passage) == []
    assert R.check_reference_content("Read the read-only scheduler.queue attribute.",
                                     "scheduler.queue: read-only attribute listing upcoming events") == []


# --------------------------------------------------------------------------------------------
# near-twins across splits and the opening share, through audit_rows

def _audit(tmp_path, **splits):
    files = {}
    for split, rows in splits.items():
        path = write_jsonl(tmp_path / f"{split}.jsonl", rows)
        files[str(path)] = load_data(path)
    problems, stats = audit_rows(files)
    return problems, stats


CTX = "itertools.accumulate(iterable) makes an iterator of accumulated sums, e.g. 1 3 6 10 15."
REF = "Use itertools.accumulate(), which yields accumulated sums."


def test_near_twins_across_splits_but_not_within_one(tmp_path):
    a = "How do I compute running totals of a list in Python?"
    b = "How do I compute running totals of a list?"  # cosine ~0.91: below the near-duplicate bound
    test = [make_row("t1", "original", a, split="test", context=CTX, reference=REF, passage="a.html#1")]
    train = [make_row("r1", "original", b, split="train", context=CTX + " Other words.", reference=REF, passage="b.html#1")]
    problems, _ = _audit(tmp_path, test=test, train=train)
    assert len(problems["near_twin_split"]) == 1 and "t1-orig" in problems["near_twin_split"][0]
    assert "near_duplicate" not in problems
    # the same two questions inside one split are not near-twins (nor near-duplicates)
    test2 = test + [make_row("t2", "original", b, split="test", context=CTX + " Other words.", reference=REF,
                             passage="b.html#1")]
    problems, _ = _audit(tmp_path, test=test2)
    assert "near_twin_split" not in problems and "near_duplicate" not in problems


def test_identical_passage_text_in_two_splits(tmp_path):
    dev = [make_row("d1", "original", "What happens if BZ2Decompressor.decompress is called after the end?",
                    split="dev", context=CTX, reference=REF, passage="bz2.html#d")]
    train = [make_row("r1", "original", "Which sums does accumulate give?", split="train", context=CTX,
                      reference=REF, passage="lzma.html#d")]
    problems, _ = _audit(tmp_path, dev=dev, train=train)
    found = problems["near_twin_split"]
    assert len(found) == 1 and "lzma.html#d" in found[0] and "bz2.html#d" in found[0]


OTHER_FORMS = ("What does the {t} module return?", "Why is the {t} module slow?", "When was the {t} module added?",
               "Which class does the {t} module define?", "Where is the {t} module documented?")


def _originals(n_how_do: int, n: int, split: str = "test") -> list[dict]:
    rows = []
    for i in range(n):
        t = f"topic{i}"
        q = f"How do I use the {t} module?" if i < n_how_do else OTHER_FORMS[i % len(OTHER_FORMS)].format(t=t)
        rows.append(make_row(f"{split}{i}", "original", q, split=split, context=f"The {t} module returns {t}.",
                             reference=f"The {t} module returns {t}.", passage=f"{t}.html#x"))
    return rows


@pytest.mark.parametrize("n_how_do, n, flagged", [(30, 100, True), (25, 100, False), (60, 99, False)])
def test_opening_share_threshold(tmp_path, n_how_do, n, flagged):
    problems, stats = _audit(tmp_path, test=_originals(n_how_do, n))
    assert bool(problems.get("opening_share")) == flagged, problems.get("opening_share")
    if flagged:
        assert "'how do' opens 30 of 100 originals (30.0% > 25%)" in problems["opening_share"][0]
    shares = next(iter(stats.values()))["openings"]["test"]
    assert shares["how do"] == round(n_how_do / n, 4) and max(shares.values()) == shares["how do"]
