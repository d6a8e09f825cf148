"""Cutting rendered documentation pages into passages with stable, citable ids."""

from consistbench.benchmark import corpus

PAGE = """<html><body><div role="main" class="body">
<section id="shutil-high-level-file-operations"><h1>shutil — High-level file operations<a class="headerlink" href="#x">¶</a></h1>
<p>The <a class="reference internal" href="#module-shutil"><code class="xref py py-mod"><span class="pre">shutil</span></code></a>
module offers a number of high-level operations on files and collections of files, in particular copying and removal of files.</p>
<nav class="contents"><ul><li>Directory and files operations</li></ul></nav>
<section id="directory-and-files-operations"><h2>Directory and files operations</h2>
<dl class="py function"><dt class="sig sig-object py" id="shutil.copyfile"><span class="sig-prename descclassname"><span class="pre">shutil.</span></span><span class="sig-name descname"><span class="pre">copyfile</span></span><span class="sig-paren">(</span><em class="sig-param">src</em>, <em class="sig-param">dst</em><span class="sig-paren">)</span><a class="headerlink" href="#shutil.copyfile">¶</a></dt>
<dd><p>Copy the contents (no metadata) of the file named <em>src</em> to a file named <em>dst</em> and return <em>dst</em> in the most efficient way possible.</p>
<div class="highlight"><pre>shutil.copyfile("a", "b")
</pre></div></dd></dl>
</section></section></div></body></html>"""


def test_parse_page_cuts_sections_and_objects_with_stable_ids():
    passages = {p.passage_id: p for p in corpus.parse_page(PAGE, "library/shutil.html", "library")}
    assert set(passages) == {"library/shutil.html#shutil-high-level-file-operations", "library/shutil.html#shutil.copyfile"}
    entry = passages["library/shutil.html#shutil.copyfile"]
    assert entry.text.startswith("shutil.copyfile(src, dst)\nCopy the contents (no metadata)")
    assert 'shutil.copyfile("a", "b")' in entry.text  # code kept
    assert "¶" not in entry.text
    assert entry.url == "https://docs.python.org/3.11/library/shutil.html#shutil.copyfile"
    assert entry.breadcrumb == "shutil — High-level file operations > Directory and files operations"
    intro = passages["library/shutil.html#shutil-high-level-file-operations"]
    assert "Directory and files operations" not in intro.text.split("\n", 1)[1]  # table of contents dropped
    again = {p.passage_id: p.sha256 for p in corpus.parse_page(PAGE, "library/shutil.html", "library")}
    assert again == {pid: p.sha256 for pid, p in passages.items()}


def test_long_sections_are_chunked_at_block_boundaries():
    paras = "".join(f"<p>{'word ' * 100}para{i}</p>" for i in range(5))
    page = f'<div role="main"><section id="s"><h2>Title</h2>{paras}</section></div>'
    parts = list(corpus.parse_page(page, "howto/x.html", "howto"))
    assert [p.passage_id for p in parts] == ["howto/x.html#s", "howto/x.html#s~2", "howto/x.html#s~3"]
    assert all(p.n_words <= corpus.MAX_WORDS + 5 for p in parts)
    assert "para0" in parts[0].text and "para4" in parts[2].text
