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


def test_keep_suffix_writes_under_a_name_with_the_real_suffix(tmp_path):
    dest = tmp_path / 'evolution.gif'
    dest.write_text('old')
    with replace_when_done(dest, True, 'while drawing', keep_suffix=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith('.evolution.') and tmp.suffix == '.gif'
        tmp.write_text('new')
    assert dest.read_text() == 'new' and sorted(p.name for p in tmp_path.iterdir()) == ['evolution.gif']


def test_the_kernel_tools_figures_gif_and_json_are_synced_before_they_replace(tmp_path, monkeypatch, capsys):
    """Every file the kernel tool writes goes through replace_when_done: fsync, then os.replace, nothing left."""
    from kernel_reference import outputs
    synced, replaced = set(), []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, 'fsync', lambda fd: (synced.add(os.readlink(f'/proc/self/fd/{fd}')), real_fsync(fd))[1])
    monkeypatch.setattr(os, 'replace', lambda a, b: (replaced.append((os.path.realpath(a), os.path.realpath(b))),
                                                     real_replace(a, b))[1])
    files = outputs(tmp_path)
    written = {str(Path(b).relative_to(tmp_path.resolve())) for _, b in replaced}
    assert written == set(files) and all(a in synced for a, _ in replaced)
    assert not [p for p in tmp_path.rglob('.*')], 'a temporary file was left behind'


# ---- the package's writers use replace_when_done: an unwritable place is one UserError, nothing is left behind -----
def _tiny_generated():
    import numpy as np

    from timm_alexnet_split.data.generated import Generated

    def render(split, per_class):
        for name in ('a', 'b'):
            for i in range(per_class):
                yield name, i, np.full((64, 64, 3), 40 * i + (name == 'b') * 100, dtype=np.uint8)
    return Generated('tiny', ('a', 'b'), (2, 1), {'v': 1}, render, 64)


@pytest.mark.parametrize('kind', KINDS)
def test_the_trainers_checkpoint_writes_into_an_unwritable_folder_are_one_line(tmp_path, kind):
    import numpy as np
    import torch

    from timm_alexnet_split.train import RunSaver
    from timm_alexnet_split.train.checkpoints import atomic_link, atomic_save_safetensors
    from timm_alexnet_split.train.rundir import save_npy
    (tmp_path / 'src.bin').write_bytes(b'x')
    with unwritable_folder(tmp_path, kind) as folder:
        with pytest.raises(UserError, match='cannot write .*last.pth.tar'):
            RunSaver(folder).save(0, 1.0, {'epoch': 0}, {'w': torch.zeros(2)}, {})
        with pytest.raises(UserError, match='cannot write .*w.safetensors'):
            atomic_save_safetensors({'w': torch.zeros(2)}, folder / 'w.safetensors', {})
        with pytest.raises(UserError, match='cannot write .*epoch_0001.npy'):
            save_npy(folder / 'epoch_0001.npy', np.zeros(3))
        with pytest.raises(UserError, match='cannot write .*model_best.pth.tar'):
            atomic_link(tmp_path / 'src.bin', folder / 'model_best.pth.tar')


def test_a_safetensors_failure_is_one_line_and_leaves_the_old_file(tmp_path, monkeypatch):
    import torch
    from safetensors import SafetensorError

    from timm_alexnet_split.train import checkpoints
    path = tmp_path / 'last.safetensors'
    checkpoints.atomic_save_safetensors({'w': torch.zeros(2)}, path, {'epoch': '0'})
    old = path.read_bytes()

    def fails(*a, **k):
        raise SafetensorError('Error while serializing: IoError(No space left on device)')
    monkeypatch.setattr(checkpoints, 'save_file', fails)
    with pytest.raises(UserError, match='cannot write .*last.safetensors: Error while serializing'):
        checkpoints.atomic_save_safetensors({'w': torch.ones(2)}, path, {'epoch': '1'})
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ['last.safetensors']


def test_the_trainers_hard_links_share_the_file_and_replace_atomically(tmp_path):
    from timm_alexnet_split.train.checkpoints import atomic_link
    (tmp_path / 'last.pth.tar').write_bytes(b'new')
    (tmp_path / 'model_best.pth.tar').write_bytes(b'old')
    atomic_link(tmp_path / 'last.pth.tar', tmp_path / 'model_best.pth.tar')
    assert (tmp_path / 'model_best.pth.tar').read_bytes() == b'new'
    assert os.path.samefile(tmp_path / 'last.pth.tar', tmp_path / 'model_best.pth.tar')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last.pth.tar', 'model_best.pth.tar']


@pytest.mark.parametrize('kind', KINDS)
def test_demo_manifest_pca_stats_and_generated_data_into_an_unwritable_folder_are_one_line(tmp_path, kind, capsys):
    import numpy as np
    from PIL import Image

    from timm_alexnet_split import cli, demo
    from timm_alexnet_split.data import generated
    images = tmp_path / 'images'
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / 'a.png')
    with unwritable_folder(tmp_path, kind) as folder:
        with pytest.raises(UserError, match='cannot write .*exports.demo.json'):
            demo._write_manifest(folder / 'exports', {'status': 'writing'})
        assert cli.main(['pca-stats', str(images), '-o', str(folder / 'eig.json')]) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and f'cannot write {folder / "eig.json"}' in err and 'Traceback' not in err
        with pytest.raises(UserError, match='cannot write .*tiny-data'):
            generated.write(folder / 'tiny-data', _tiny_generated(), progress=False)


def test_generated_data_has_the_usual_mode_and_replaces_a_generated_folder(tmp_path):
    from timm_alexnet_split.data import generated
    out = generated.write(tmp_path / 'tiny', _tiny_generated(), progress=False)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()  # not tempfile.mkdtemp's 0700
    assert generated.is_complete(out, _tiny_generated(), verify=True)
    (out / 'train' / 'a' / '00000.png').unlink()
    assert generated.ensure(out, _tiny_generated(), progress=False) == out  # regenerated in place
    assert generated.is_complete(out, _tiny_generated(), verify=True)
    assert [p.name for p in tmp_path.iterdir()] == ['tiny']


# Every write in the package goes to a temporary name (replace_when_done's, or a temporary folder renamed when whole)
# or to memory; the exceptions, each with its reason. A new direct write to a user's path fails here.
_WRITES = {'write_text', 'write_bytes', 'savefig', 'save', 'save_file'}
_DIRECT_WRITES_ALLOWED = {
    ('atomic.py', 'path'): 'the writer itself: opens its temporary file to fsync it',
    ('databench.py', "d / f'{i:06d}.jpg'"): 'benchmark images inside the benchmark\'s own temporary folder',
    ('data/jpeg.py', 'out'): 'a tiny JPEG encoded into memory (io.BytesIO) for the first-use check of simplejpeg',
    ('train/data.py', 'self.log_path'): 'the skip log is appended to, a line at a time',
    ('train/checkpoints.py', 'obj'): 'torch.save(obj, tmp): the object, not the path',
    ('train/run.py', 'epoch'): 'RunSaver.save(epoch, ...): not a file write',
    ('train/rundir.py', 'f'): 'np.save into a file opened at the temporary name',
}


def _written_path(call):
    """The path expression a call writes to, or None for a call that writes no file."""
    import ast
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr in ('write_text', 'write_bytes'):
        return ast.unparse(f.value)
    if isinstance(f, ast.Attribute) and f.attr == 'save_image' and len(call.args) > 1:  # torchvision.utils
        return ast.unparse(call.args[1])
    if isinstance(f, ast.Attribute) and f.attr in _WRITES and call.args:
        return ast.unparse(call.args[1] if f.attr == 'save_file' and len(call.args) > 1 else call.args[0])
    mode = next((k.value for k in call.keywords if k.arg == 'mode'), None)
    if isinstance(f, ast.Name) and f.id == 'open':  # open(path, 'w') / open(path, mode='w')
        mode = call.args[1] if len(call.args) > 1 else mode
        target = ast.unparse(call.args[0]) if call.args else None
    elif isinstance(f, ast.Attribute) and f.attr == 'open':  # Path(...).open('w')
        mode = call.args[0] if call.args else mode
        target = ast.unparse(f.value)
    else:
        return None
    writes = isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set('wax+')
    return target if writes else None


def _temporary(target):
    """A write to replace_when_done's temporary name (by this package's convention, a name starting with tmp) or to
    memory (buf)."""
    return re.search(r'\b(tmp\w*|buf)\b', target) is not None


def test_every_file_the_package_writes_goes_through_a_temporary_name():
    import ast

    import timm_alexnet_split
    root = Path(timm_alexnet_split.__file__).parent
    direct = []
    for path in sorted(root.rglob('*.py')):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            target = _written_path(node) if isinstance(node, ast.Call) else None
            if target is None or _temporary(target) or (rel, target) in _DIRECT_WRITES_ALLOWED:
                continue
            direct.append(f'{rel}:{node.lineno} writes {target}')
    assert not direct, 'write through atomic.replace_when_done / atomic.write_text:\n' + '\n'.join(direct)
    for code, written in (("(out / 'x.json').write_text(s)", "out / 'x.json'"), ("open(p, mode='w')", 'p'),
                          ("Path(p).open('a')", 'Path(p)'), ('save_image(x, out / name)', None),
                          ('torchvision.utils.save_image(x, out / name)', 'out / name'), ("open(p)", None)):
        assert _written_path(ast.parse(code).body[0].value) == written, code
    assert _temporary('Path(tmp) / name') and not _temporary('attempt / name') and not _temporary('out')
