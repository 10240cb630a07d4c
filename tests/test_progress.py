"""Progress off a terminal: a few plain lines a log can hold, never a bar's carriage returns."""
import io

from timm_alexnet_split.progress import PlainProgress, progress


def test_plain_progress_writes_whole_lines_and_the_end(monkeypatch):
    out = io.StringIO()
    with PlainProgress(total=5, desc='demo data', unit='img', every=0.0, file=out) as bar:
        for _ in range(5):
            bar.update(1)
    text = out.getvalue()
    assert '\r' not in text
    lines = text.splitlines()
    assert lines[-1].startswith('demo data: 5/5 img (100%)')
    assert len(lines) == 5  # 1..4 as they came (every=0), then the end once


def test_plain_progress_is_rate_limited_and_wraps_iterables():
    out = io.StringIO()
    assert list(PlainProgress(range(1000), desc='files', every=3600, file=out, quiet_under=0)) == list(range(1000))
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[-1]]
    assert out.getvalue().startswith('files: 1000/1000 it (100%)')


def test_short_work_prints_nothing():
    out = io.StringIO()
    with PlainProgress(total=3, desc='quick', file=out) as bar:
        bar.update(3)
    assert out.getvalue() == ''


def test_progress_off_a_terminal_is_plain_and_can_be_silent(capsys):
    with progress(total=3, desc='x') as bar:  # pytest's stderr is no terminal
        bar.quiet_under = 0
        bar.update(3)
    assert isinstance(bar, PlainProgress)
    assert capsys.readouterr().err.startswith('x: 3/3')
    with progress(total=3, desc='y', enabled=False) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ''
