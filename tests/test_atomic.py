"""replace_when_done: the user's file is the old one or the new one, never half; no temporary file is left."""
import os
import re
import stat
from pathlib import Path

import pytest
from unwritable import KINDS, unwritable_folder

from timm_alexnet_split.atomic import check_writable, replace_when_done
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


# ---- unwritable places: one UserError, raised before the block runs, never replaced by the cleanup's error --------
@pytest.mark.parametrize('kind', KINDS)
def test_an_unwritable_place_is_one_user_error_before_any_work(tmp_path, kind):
    ran = []
    with unwritable_folder(tmp_path, kind) as folder:
        for make_folder in (False, True):
            with pytest.raises(UserError, match=f'cannot write {re.escape(str(folder))}'):
                with replace_when_done(folder / 'x.onnx', True, 'during the test', make_folder=make_folder) as tmp:
                    ran.append(tmp)
            with pytest.raises(UserError, match='cannot write'):
                with replace_when_done(folder / 'sub' / 'x.onnx', True, 'during the test', make_folder=True):
                    ran.append(1)
            with pytest.raises(UserError, match='cannot write'):
                with replace_when_done(folder / 'out', True, 'during the test', make_folder=make_folder, folder=True):
                    ran.append(1)
            with pytest.raises(UserError, match='cannot write'):
                check_writable(folder / 'x.onnx', make_folder=make_folder)
    assert ran == []


def test_a_failing_cleanup_never_hides_the_error(tmp_path, monkeypatch, capsys):
    def refuse(self, missing_ok=False):
        raise PermissionError(13, 'Permission denied')
    with pytest.raises(RuntimeError, match='verification failed'):
        with replace_when_done(tmp_path / 'out.onnx', True, 'during the test') as tmp:
            tmp.write_text('half')
            monkeypatch.setattr(Path, 'unlink', refuse)
            raise RuntimeError('verification failed')
    monkeypatch.undo()
    assert 'could not remove the temporary file' in capsys.readouterr().err
    assert not (tmp_path / 'out.onnx').exists()


def test_folders_made_for_a_failed_output_are_removed(tmp_path):
    dest = tmp_path / 'new' / 'deeper' / 'x.onnx'
    with pytest.raises(UserError, match='new does not exist'):
        with replace_when_done(dest, False, 'during the test'):
            pass
    with pytest.raises(RuntimeError):
        with replace_when_done(dest, False, 'during the test', make_folder=True) as tmp:
            assert tmp.parent.is_dir()
            raise RuntimeError('export failed')
    assert list(tmp_path.iterdir()) == []
    with replace_when_done(dest, False, 'during the test', make_folder=True) as tmp:
        tmp.write_text('new')
    assert dest.read_text() == 'new' and [p.name for p in dest.parent.iterdir()] == ['x.onnx']


def test_a_folder_output_replaces_only_an_empty_folder(tmp_path):
    dest = tmp_path / 'split'
    dest.mkdir()
    with replace_when_done(dest, True, 'while preparing it', folder=True) as tmp:
        (tmp / 'train').mkdir()
    assert [p.name for p in dest.iterdir()] == ['train'] and [p.name for p in tmp_path.iterdir()] == ['split']
    assert stat.S_IMODE(dest.stat().st_mode) == 0o777 & ~_umask()  # not tempfile.mkdtemp's 0700
    with pytest.raises(UserError, match='cannot write'):
        with replace_when_done(dest, True, 'while preparing it', folder=True) as tmp:
            (tmp / 'validation').mkdir()
    assert [p.name for p in dest.iterdir()] == ['train'] and [p.name for p in tmp_path.iterdir()] == ['split']


def test_check_writable_leaves_nothing(tmp_path):
    check_writable(tmp_path / 'x.safetensors')
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match='does not exist; create it first'):
        check_writable(tmp_path / 'missing' / 'x.safetensors')


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_new_file_is_on_disk_before_it_replaces_the_old(tmp_path, monkeypatch):
    dest = tmp_path / 'last.pth.tar'
    dest.write_text('old')
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, 'fsync', lambda fd: (events.append(('fsync', os.readlink(f'/proc/self/fd/{fd}'))), real_fsync(fd)))
    monkeypatch.setattr(os, 'replace', lambda a, b: (events.append(('replace', str(a))), real_replace(a, b)))
    with replace_when_done(dest, True, 'while saving') as tmp:
        tmp.write_text('new')
    assert events == [('fsync', os.path.realpath(tmp)), ('replace', str(tmp))] and dest.read_text() == 'new'
