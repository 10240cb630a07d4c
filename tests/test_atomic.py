"""replace_when_done: the user's file is the old one or the new one, never half; no temporary file is left."""
import pytest

from timm_alexnet_split.atomic import replace_when_done
from timm_alexnet_split.errors import UserError


def test_replaces_only_when_the_block_succeeds(tmp_path):
    dest = tmp_path / 'out.onnx'
    dest.write_text('old')
    with pytest.raises(RuntimeError):
        with replace_when_done(dest, True, 'during the test') as tmp:
            tmp.write_text('half')
            raise RuntimeError('verification failed')
    assert dest.read_text() == 'old'
    with replace_when_done(dest, True, 'during the test') as tmp:
        tmp.write_text('new')
    assert dest.read_text() == 'new' and [p.name for p in tmp_path.iterdir()] == ['out.onnx']


def test_a_file_that_appears_meanwhile_is_kept_without_overwrite(tmp_path):
    dest = tmp_path / 'w.safetensors'
    with pytest.raises(UserError, match='appeared while importing; use --force'):
        with replace_when_done(dest, False, 'while importing') as tmp:
            tmp.write_text('ours')
            dest.write_text('someone else')
    assert dest.read_text() == 'someone else' and len(list(tmp_path.iterdir())) == 1


def test_os_errors_become_one_line(tmp_path):
    dest = tmp_path / 'missing-folder' / 'x.onnx'
    with pytest.raises(UserError, match='cannot write .*x.onnx'):
        with replace_when_done(dest, False, 'during the test') as tmp:
            tmp.write_text('x')
