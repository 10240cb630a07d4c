"""prepare-shards and training from the shards through timm's WebDataset reader (issue 13)."""
import io
import json
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from timm_alexnet_split import cli, train
from timm_alexnet_split.data import shard_reader, shards
from timm_alexnet_split.errors import UserError

CLASSES = ('ant', 'bee', 'cow')


def _jpeg(path: Path, value: int, size=(48, 40)) -> None:
    a = np.full((size[1], size[0], 3), value, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, quality=95)


def make_folder(root: Path, per_class: int, val: str = 'val', corrupt: bool = False) -> Path:
    """An ImageFolder whose images are each one flat grey level (unique per image: its identity after any crop)."""
    k = 0
    for split, n in (('train', per_class), (val, max(1, per_class // 3))):
        for c in CLASSES:
            for i in range(n):
                _jpeg(root / split / c / f'{i:03d}.jpg', 20 + 6 * k, size=(48 + 7 * (k % 3), 40 + 5 * (k % 2)))
                k += 1
    if corrupt:
        (root / 'train' / 'bee' / 'broken.jpg').write_bytes(b'\xff\xd8\xff not really a JPEG')
    return root


def prepare(src: Path, out: Path, *extra: str) -> int:
    return cli.main(['prepare-shards', str(src), str(out), '--size', '32', '--shard-size', '5', *extra])


@pytest.fixture(scope='module')
def made(module_tmp):
    src = make_folder(module_tmp / 'images', 8, corrupt=True)
    out = module_tmp / 'shards'
    assert prepare(src, out, '--workers', '2') == 0
    return src, out


def test_round_trip_labels_counts_and_class_map(made):
    src, out = made
    info = json.loads((out / '_info.json').read_text())
    assert (out / 'class_map.txt').read_text().split() == list(CLASSES)
    assert set(info['splits']) == {'train', 'validation'}  # val/ is timm's 'validation'
    assert info['num_classes'] == 3
    assert [s['path'] for s in info['skipped']['train']] == [os.path.join('train', 'bee', 'broken.jpg')]
    for split, folder, n in (('train', 'train', 24), ('validation', 'val', 6)):
        entry = info['splits'][split]
        assert entry['num_samples'] == n == sum(entry['shard_lengths'])
        assert max(entry['shard_lengths']) - min(entry['shard_lengths']) <= 1
        seen = []
        for f, length in zip(entry['filenames'], entry['shard_lengths']):
            samples = shards.read_shard(out / f)
            assert len(samples) == length
            for s in samples:
                meta = json.loads(s['json'])
                assert meta['filename'].startswith(folder + os.sep)
                assert CLASSES[int(s['cls'])] == meta['class_name'] == Path(meta['filename']).parent.name
                img = Image.open(io.BytesIO(s['jpg']))
                assert img.format == 'JPEG' and img.size == (32, 32)
                seen.append(meta['filename'])
        assert len(seen) == len(set(seen)) == n
        assert sorted(seen) == sorted(str(p.relative_to(src)) for p in (src / folder).rglob('*.jpg')
                                      if p.name != 'broken.jpg')
    first = shards.read_shard(out / info['splits']['train']['filenames'][0])
    assert len({int(s['cls']) for s in first}) > 1  # shuffled across shards, not one class per shard


def test_same_input_gives_the_same_shards_and_keep_aspect_keeps_it(made, tmp_path):
    src, out = made
    again = tmp_path / 'again'
    assert prepare(src, again, '--workers', '1') == 0
    info = json.loads((out / '_info.json').read_text())
    for f in info['splits']['train']['filenames'] + info['splits']['validation']['filenames']:
        assert (again / f).read_bytes() == (out / f).read_bytes(), f
    wide = tmp_path / 'wide'
    assert prepare(src, wide, '--keep-aspect', '--workers', '1') == 0
    s = shards.read_shard(wide / json.loads((wide / '_info.json').read_text())['splits']['train']['filenames'][0])[0]
    w, h = Image.open(io.BytesIO(s['jpg'])).size
    assert min(w, h) == 32 and max(w, h) > 32


def test_an_interrupted_preparation_is_resumed_keeping_complete_shards(made, tmp_path, monkeypatch):
    src, out = made
    dest = tmp_path / 'resumed'
    calls = []
    real = shards.write_shard

    def dies_on_the_third(job, *a, **k):
        calls.append(job.path.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job, *a, **k)

    monkeypatch.setattr(shards, 'write_shard', dies_on_the_third)
    assert prepare(src, dest, '--workers', '1') == 130
    monkeypatch.setattr(shards, 'write_shard', real)
    written = sorted(p.name for p in dest.rglob('*.tar'))
    assert len(written) == 2 and not list(dest.rglob('*.tmp')) and not (dest / '_info.json').exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in dest.rglob('*.tar')}
    stale = dest / 'train' / f'.{written[0]}.999.tmp'  # as a worker killed mid-shard leaves it
    stale.write_bytes(b'half a shard')
    calls.clear()
    monkeypatch.setattr(shards, 'write_shard', lambda job, *a, **k: (calls.append(job.path.name), real(job, *a, **k))[1])
    assert prepare(src, dest, '--workers', '1') == 0
    assert not set(calls) & set(written)  # complete shards were kept, not rewritten
    assert not stale.exists()
    assert {p.name: p.stat().st_mtime_ns for p in dest.rglob('*.tar') if p.name in stamps} == stamps
    assert json.loads((dest / '_info.json').read_text())['splits'] == \
        json.loads((out / '_info.json').read_text())['splits']
    for p in out.rglob('*.tar'):
        assert (dest / p.relative_to(out)).read_bytes() == p.read_bytes()


def test_bad_input_ends_in_one_line(made, tmp_path, capsys):
    src, _ = made
    (tmp_path / 'empty').mkdir()
    user = tmp_path / 'user'
    user.mkdir()
    (user / 'notes.txt').write_text('mine')
    cases = [(tmp_path / 'missing', tmp_path / 'o1', 'not found'),
             (tmp_path / 'empty', tmp_path / 'o2', 'no train/'),
             (src, user, 'not empty'),
             (src, user / 'notes.txt', 'not a folder'),
             (src, user / 'notes.txt' / 'out', 'cannot write')]  # unwritable, even for root
    for source, dest, words in cases:
        capsys.readouterr()
        assert prepare(source, dest) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert (user / 'notes.txt').read_text() == 'mine' and sorted(os.listdir(user)) == ['notes.txt']
    other = tmp_path / 'other'
    assert prepare(src, other, '--workers', '1') == 0
    assert prepare(src, other, '--workers', '1', '--quality', '50') == 2  # another plan never mixes into it
    assert 'other options' in capsys.readouterr().err
    if os.geteuid() != 0:
        locked = tmp_path / 'locked'
        locked.mkdir(mode=0o500)
        assert prepare(src, locked / 'out') == 2
        assert 'cannot write' in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# training through timm's reader
# ---------------------------------------------------------------------------------------------------------------------
def _args(out: Path, *extra: str):
    args = train.parse_args(['--dataset', 'wds/shards', '--data-dir', str(out), '--model-kwargs', 'fc_width=64',
                             '--img-size', '64', '--paper-crop', '--color-jitter', '0', *extra])
    args.distributed, args.world_size, args.rank, args.prefetcher = False, 1, 0, not args.no_prefetcher
    return args


def _identities(loader, grey_levels) -> list:
    """The source image of every sample of one pass, by its grey level (images are flat grey)."""
    ids = []
    for x, _ in loader:
        for v in x.float().mean((1, 2, 3)).tolist():
            ids.append(int(np.abs(grey_levels - v).argmin()))
    return ids


def test_timm_reader_over_our_shards_in_our_trainer(made, tmp_path, capsys):
    _, out = made
    rc = cli.main(['train', '--dataset', 'wds/shards', '--data-dir', str(out), '--model-kwargs', 'fc_width=64',
                   '--img-size', '64', '--paper-crop', '--color-jitter', '0', '--pca-lighting', '0.1', '-b', '4',
                   '--epochs', '1', '--workers', '2', '--lr', '0.001', '--warmup-epochs', '0', '--output',
                   str(tmp_path), '--experiment', 'wds'])
    err = capsys.readouterr().err
    assert rc == 0, err
    run = tmp_path / 'wds'
    assert (run / 'class_map.txt').read_text().split() == list(CLASSES)
    assert 'num_classes 3' in err and 'validating on the training images' not in err
    rows = (run / 'summary.csv').read_text().splitlines()
    assert len(rows) == 2 and 'eval_top1' in rows[0]
    for extra in ([], ['--ten-crop']):
        assert cli.main(['validate', '--checkpoint', str(run / 'model_best.pth.tar'), '--dataset', 'wds/shards',
                         '--data-dir', str(out), '--workers', '2', *extra]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result['images'] == 6 and result['skipped_unreadable'] == 0 and result['top1'] >= 0
    args = _args(out, '-b', '4', '--workers', '0')
    train_ds, eval_ds, names = train.data.build_datasets(args)
    assert names == list(CLASSES) and len(train_ds) == 24
    loader, _ = train.loaders.build_loaders(args, {'input_size': (3, 64, 64), 'crop_pct': 0.875, 'interpolation': 'bilinear',
                                           'mean': (0.5,) * 3, 'std': (1 / 255,) * 3}, torch.device('cpu'),
                                    train_ds, eval_ds, torch.float32)
    assert any(isinstance(t, train.PaperCrop) for t in loader.dataset.transform.transforms)
    assert hasattr(loader.sampler, 'set_epoch')


def test_a_missing_or_malformed_info_json_is_one_line(made, tmp_path, capsys):
    _, out = made
    bad = tmp_path / 'bad'
    bad.mkdir()
    base = ['train', '--dataset', 'wds/x', '--data-dir', str(bad), '--model-kwargs', 'fc_width=64', '--epochs', '1',
            '--output', str(tmp_path / 'runs')]
    for content, words in ((None, '_info.json not found'), ('{"splits": ', 'not a readable shard index'),
                           ('{"splits": {"train": {"name": "train"}}}', 'not a readable shard index'),
                           (None, 'split \'nope\' not in')):
        if content is not None:
            (bad / '_info.json').write_text(content)
        argv = base
        if words.startswith('split'):
            argv = [a if a != str(bad) else str(out) for a in base] + ['--train-split', 'nope']
        capsys.readouterr()
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    with pytest.raises(UserError, match='--class-map does not apply'):
        train.data.create_split_dataset(_args(out, '--class-map', str(out / 'class_map.txt')), 'train', True,
                              str(out / 'class_map.txt'), 'training')


@pytest.fixture(scope='module')
def even(module_tmp):
    """16 training images in 4 shards of 4: two workers, batch 4, each reads two whole shards."""
    src = module_tmp / 'even-images'
    k = 0
    levels = []
    for c in ('a', 'b'):
        for i in range(8):
            level = 20 + 13 * k
            _jpeg(src / 'train' / c / f'{i}.jpg', level, size=(40, 40))
            levels.append(level)
            k += 1
    _jpeg(src / 'validation' / 'a' / '0.jpg', 250, size=(40, 40))
    out = module_tmp / 'even-shards'
    assert cli.main(['prepare-shards', str(src), str(out), '--size', '32', '--shard-size', '4', '--workers', '1']) == 0
    return out, np.array(levels, dtype=float)


def test_two_workers_see_each_training_sample_once_per_epoch(even):
    out, levels = even
    args = _args(out, '-b', '4', '--workers', '2', '--no-prefetcher', '--hflip', '0', '--mean', '0', '0', '0',
                 '--std', '1', '1', '1', '--val-split', '')
    train_ds, _, _ = train.data.build_datasets(args)
    cfg = {'input_size': (3, 28, 28), 'crop_pct': 0.875, 'interpolation': 'bilinear', 'mean': (0,) * 3, 'std': (1,) * 3}
    loader, _ = train.loaders.build_loaders(args, cfg, torch.device('cpu'), train_ds, None, torch.float32)
    assert shard_reader.wds_epoch_note(train_ds, 1, 2, 4) is None
    assert len(loader) == 4
    orders = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        ids = _identities(loader, levels / 255)
        assert sorted(ids) == list(range(16)), ids
        orders.append(ids)
    assert orders[0] != orders[1]  # a new shuffle each epoch
    # 3 readers hold 8, 4 and 4 samples: in batches of 3 they train 6 + 3 + 3, each once, and the note says so
    note = shard_reader.wds_epoch_note(train_ds, 1, 3, 3)
    assert note.startswith('4 of the 16 training samples (25.0%) are left out of each epoch'), note
    # timm's own reader (shards made by others) draws some samples twice instead: its note says that
    assert 'do not divide' in shard_reader.even_split_note({'shard_lengths': [4] * 4}, 1, 3, 4)


def test_gpu_decode_path_runs_on_cpu_and_shows_each_sample_once(even):
    out, levels = even
    args = _args(out, '-b', '4', '--workers', '2', '--decode', 'gpu', '--hflip', '0.5')
    cfg = {'input_size': (3, 28, 28), 'crop_pct': 0.875, 'interpolation': 'bilinear', 'mean': (0,) * 3,
           'std': (1 / 255,) * 3}  # 0-255 pixels out
    ev = train.data.create_split_dataset(args, 'validation', False, None, 'validation')
    loader, loader_eval = train.loaders.device_decode_loaders(args, cfg, torch.device('cpu'), ev, torch.float32)
    assert len(loader) == 4
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        ids = []
        for x, y in loader:
            assert x.shape == (4, 3, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
            for v, label in zip(x.mean((1, 2, 3)).tolist(), y.tolist()):
                ids.append(int(np.abs(levels - v).argmin()))
                assert label == ids[-1] // 8  # class a: the first 8 grey levels
        assert sorted(ids) == list(range(16))
    batches = list(loader_eval)
    assert len(batches) == 1 and batches[0][0].shape == (1, 3, 28, 28)
    assert abs(batches[0][0].mean().item() - 250) < 3


def test_gpu_decode_without_cuda_says_so_in_one_line_and_refuses_what_it_cannot_do(even, caplog):
    out, _ = even
    args = _args(out, '--decode', 'gpu')
    with caplog.at_level('WARNING', logger='timm_alexnet_split.train'):
        assert train.loaders.decode_mode(args, torch.device('cpu')) == 'cpu'
    assert [r.getMessage() for r in caplog.records if 'no CUDA' in r.getMessage()]
    with pytest.raises(UserError, match='--paper-crop'):
        train.loaders.decode_mode(train.parse_args(['--dataset', 'wds/x', '--decode', 'gpu']), torch.device('cpu'))
    with pytest.raises(UserError, match='--color-jitter'):
        train.loaders.decode_mode(train.parse_args(['--dataset', 'wds/x', '--decode', 'gpu', '--paper-crop']),
                           torch.device('cpu'))


def test_shard_bytes_shares_out_shards_by_rank_with_equal_batches():
    entry = {'filenames': [f'{i}.tar' for i in range(5)], 'shard_lengths': [4, 4, 4, 4, 3]}
    ranks = [shard_reader.ShardBytes('/x', entry, 2, True, workers=1, rank=r, world=2) for r in range(2)]
    assert [r.steps for r in ranks] == [4, 4]  # rank 0 has 11 samples (5 batches), rank 1 8: both run 4
    assert [len(r) for r in ranks] == [6, 4]  # what the readers yield, their last partial batch included
    assert ranks[0].dropped == 19 - 16
    single = shard_reader.ShardBytes('/x', entry, 2, False, workers=2)
    assert len(single) == 6 + 4  # evaluation keeps the partial batches: 11 -> 6, 8 -> 4


def test_our_shards_are_parsed_without_tarfile_and_read_as_tarfile_reads_them(made, monkeypatch):
    """read_shard's own ustar parser gives tarfile's samples, byte for byte, for every shard prepare-shards wrote."""
    _, out = made
    files = sorted(out.rglob('*.tar'))
    expected = [shards._read_with_tarfile(f) for f in files]
    monkeypatch.setattr(shards, '_read_with_tarfile', lambda path: pytest.fail(f'{path} went to tarfile'))
    assert [shards.read_shard(f) for f in files] == expected and sum(map(len, expected)) == 30


def _tar(path: Path, members, fmt=tarfile.USTAR_FORMAT) -> Path:
    with tarfile.open(path, 'w', format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_other_tars_and_damaged_ones_read_or_fail_as_tarfile_does(tmp_path):
    """Anything but plain ustar file entries (pax headers, a GNU long name, a directory entry, a bad checksum, a
    cut file, no end blocks) goes to tarfile: the same samples, or tarfile's error."""
    long_key = 'k' * 120
    members = [(f'{long_key}.jpg', b'\xff\xd8' * 300), (f'{long_key}.cls', b'1'), ('b/00000001.jpg', b'x' * 513)]
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        path = _tar(tmp_path / f'{fmt}.tar', members, fmt)
        assert shards._plain_ustar(path.read_bytes()) is None
        got = shards.read_shard(path)
        assert got == shards._read_with_tarfile(path) and got[0]['__key__'] == long_key.encode() and len(got) == 2
    with tarfile.open(tmp_path / 'dir.tar', 'w', format=tarfile.USTAR_FORMAT) as tar:
        d = tarfile.TarInfo('somedir')
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
    assert shards._plain_ustar((tmp_path / 'dir.tar').read_bytes()) is None
    assert shards.read_shard(tmp_path / 'dir.tar') == []
    good = _tar(tmp_path / 'good.tar', [('a/00000000.jpg', b'y' * 700), ('a/00000000.cls', b'2')]).read_bytes()
    assert shards._plain_ustar(good) == [{'__key__': b'00000000', 'jpg': b'y' * 700, 'cls': b'2'}]
    no_end = tmp_path / 'no-end.tar'
    no_end.write_bytes(good[:512 * 5])  # two entries (header, 2 blocks; header, 1 block), no end blocks
    assert shards._plain_ustar(no_end.read_bytes()) is None
    assert shards.read_shard(no_end) == shards._read_with_tarfile(no_end) == shards._plain_ustar(good)
    bad_sum = bytearray(good)
    bad_sum[512 * 3] ^= 1  # a name byte of the second header
    (tmp_path / 'bad-sum.tar').write_bytes(bad_sum)
    cut = tmp_path / 'cut.tar'
    cut.write_bytes(good[:512 + 300])
    assert shards._plain_ustar(bad_sum) is None  # tarfile ends the shard there, silently: DealtShards.read counts
    assert shards.read_shard(tmp_path / 'bad-sum.tar') == [{'__key__': b'00000000', 'jpg': b'y' * 700}]
    assert shards._plain_ustar(cut.read_bytes()) is None
    with pytest.raises(tarfile.ReadError):
        shards.read_shard(cut)


@pytest.mark.parametrize('damage', ['cut', 'bad header', 'another file'])
@pytest.mark.parametrize('workers', [0, 2])
def test_a_damaged_training_shard_stops_training_in_one_line(even, tmp_path, capsys, damage, workers):
    """A shard cut short, one whose later header is damaged (tarfile would end the shard there, silently) or one
    holding other samples than the index says: one line naming the file, exit 2, never a shorter epoch."""
    import shutil
    out = tmp_path / 'shards'
    shutil.copytree(even[0], out)
    info = json.loads((out / '_info.json').read_text())
    victim = out / info['splits']['train']['filenames'][1]
    data = bytearray(victim.read_bytes())
    if damage == 'cut':
        data = data[:len(data) // 2]
    elif damage == 'bad header':
        second = 512 + -(-int(data[124:136].strip(b' \0'), 8) // 512) * 512  # the first member's data, then a header
        data[second] ^= 1
    else:
        other = out / info['splits']['train']['filenames'][0]
        with tarfile.open(other) as tar:
            seventh = [m.offset for m in tar][6]  # a well-formed tar of the other file's first two samples
        data = other.read_bytes()[:seventh] + bytes(1024)
    victim.write_bytes(bytes(data))
    rc = cli.main(['train', '--dataset', 'wds/shards', '--data-dir', str(out), '--model-kwargs', 'fc_width=64',
                   '--img-size', '64', '-b', '4', '--epochs', '1', '--workers', str(workers), '--output',
                   str(tmp_path / 'runs'), '--experiment', 'x'])
    err = capsys.readouterr().err
    assert rc == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith('timm-alexnet-split train: error: ') and str(victim) in last, err
    assert 'make the shards again' in last and 'Traceback' not in err


def _with_header(data: bytes, at: int, **fields: bytes) -> bytes:
    """``data`` with the header at ``at`` changed (fields: name, size) and its checksum made valid again."""
    h = bytearray(data[at:at + 512])
    for field, value in fields.items():
        where = {'name': slice(0, 100), 'size': slice(124, 136), 'type': slice(156, 157)}[field]
        h[where] = value.ljust(where.stop - where.start, b'\0')
    h[148:156] = b' ' * 8
    h[148:156] = b'%06o\0 ' % sum(h)
    return data[:at] + bytes(h) + data[at + 512:]


def test_headers_a_writer_never_makes_go_to_tarfile(tmp_path):
    """A negative size (it would step the parser back onto its own header) and an old-style directory entry (type
    0, a name ending in '/'): tarfile reads them, as it did before."""
    good = _tar(tmp_path / 'good.tar', [('a/00000000.jpg', b'y' * 600), ('a/00000000.cls', b'2')]).read_bytes()
    for name, data in (('negative', _with_header(good, 0, size=b'-0000001000')),
                       ('directory', _with_header(good, 0, name=b'a/', size=b'0' * 11))):
        path = tmp_path / f'{name}.tar'
        path.write_bytes(data)
        assert shards._plain_ustar(data) is None, name
        try:
            expected = shards._read_with_tarfile(path)
        except tarfile.TarError as e:
            with pytest.raises(type(e)):
                shards.read_shard(path)
        else:
            assert shards.read_shard(path) == expected


def test_a_shard_cut_after_an_image_is_refused_not_shortened(even, tmp_path):
    """Cut right after a sample's .jpg (at a block boundary): every parser returns that sample without its class,
    which the reader would skip; the count of whole samples is what the index is held to."""
    import shutil
    out = tmp_path / 'shards'
    shutil.copytree(even[0], out)
    entry = json.loads((out / '_info.json').read_text())['splits']['train']
    victim = out / entry['filenames'][0]
    with tarfile.open(victim) as tar:
        last_jpg = [m for m in tar if m.name.endswith('.jpg')][-1]
    victim.write_bytes(victim.read_bytes()[:last_jpg.offset_data + -(-last_jpg.size // 512) * 512])
    assert len(shards.read_shard(victim)) == entry['shard_lengths'][0]  # the cut sample is there, without 'cls'
    with pytest.raises(UserError, match='holds 3 whole samples'):
        shard_reader.DealtShards(str(out), entry, 4, False, 1).read(0)


def test_tar_members_have_fixed_metadata(made):
    _, out = made
    with tarfile.open(next(out.rglob('*.tar'))) as tar:
        assert {(m.mtime, m.uid, m.uname) for m in tar} == {(0, 0, '')}


def test_bench_data_prints_per_core_figures_and_the_ratio_last(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    assert cli.main(['bench', '--data', '--data-images', '12', '--rounds', '1', '--json', str(out),
                     '--data-dir', str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r'shards vs full-size folder, per core: \d+\.\d\dx', lines[-1]), lines[-1]
    rows = {ln[:36].strip(): ln[36:].split() for ln in lines if ln.startswith('  ') and ln.strip()[0].isalnum()}
    assert set(rows) >= {'full-size folder', 'full-size folder, draft decoding', '256-px shards'}
    assert rows['full-size folder'][-1] == '1.00x'
    result = json.loads(out.read_text())
    assert f'{result["shards_vs_folder_per_core"]:.2f}x' == lines[-1].rsplit(' ', 1)[1]
    assert 90 < result['jpeg_kb'] < 130 and result['shard_kb'] < result['jpeg_kb']  # ImageNet-like file sizes
    assert [p.name for p in tmp_path.iterdir()] == ['bench.json']  # the generated images are gone
    decoders = result['decoders']  # JPEG decoding alone, by each decoder present: PIL always
    assert all(r['256-px'] > r['full-size'] > 0 for r in decoders.values()) and 'PIL' in decoders
    assert rows['PIL'] == [f'{decoders["PIL"]["full-size"]:.0f}', f'{decoders["PIL"]["256-px"]:.0f}']
    assert ('simplejpeg' in rows) == ('simplejpeg' in decoders) != any('simplejpeg not installed' in ln for ln in lines)


def test_the_decoder_table_says_how_to_add_simplejpeg_where_it_is_missing(monkeypatch):
    import builtins

    from timm_alexnet_split import databench
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, '__import__', lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == 'simplejpeg' else real_import(name, *a, **k))
    assert list(databench._decoders()) == ['PIL']
    said = []
    databench._say_decoders({'PIL': {'full-size': 700.0, '256-px': 2900.0}}, said.append)
    assert said[-1].strip() == '(simplejpeg not installed: `pip install simplejpeg` adds it to this table)'


RANKS_SCRIPT = '''
import json, sys
import torch, torch.distributed as dist
dist.init_process_group('gloo')
from timm_alexnet_split import train
from timm_alexnet_split.data import decode, shard_reader
out, rank, world = sys.argv[1], dist.get_rank(), dist.get_world_size()
args = train.parse_args(['--dataset', 'wds/x', '--data-dir', out, '--paper-crop', '--color-jitter', '0', '-b', '2',
                         '--workers', '1', '--no-prefetcher', '--hflip', '0', '--val-split', ''])
args.distributed, args.world_size, args.rank, args.prefetcher = True, world, rank, False
ds, _, _ = train.data.build_datasets(args)
cfg = {'input_size': (3, 28, 28), 'crop_pct': 0.875, 'interpolation': 'bilinear', 'mean': (0,) * 3, 'std': (1 / 255,) * 3}
loader, _ = train.loaders.build_loaders(args, cfg, torch.device('cpu'), ds, None, torch.float32)
timm_means = [v for x, _ in loader for v in x.mean((1, 2, 3)).tolist()]
sb = shard_reader.ShardBytes(out, shard_reader.check_split(out, 'train'), 2, True, 1, rank=rank, world=world)
byte_means = []
for data, _ in sb:
    images, _ = decode.decode_batch(data, torch.device('cpu'))
    byte_means += [img.float().mean().item() for img in images]
line = 'RESULT ' + json.dumps({'rank': rank, 'timm': timm_means, 'bytes': byte_means, 'len': [len(loader), len(sb)]})
sys.stdout.write(line + '\\n')  # one write: print's two could interleave with the other rank's line
sys.stdout.flush()
'''


@pytest.mark.slow
def test_two_processes_share_the_shards_each_sample_once(even, tmp_path):
    """torchrun, 2 processes x 1 loader worker: timm's reader and ShardBytes give each rank its own shards."""
    import subprocess
    import sys
    out, levels = even
    script = tmp_path / 'ranks.py'
    script.write_text(RANKS_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_PORT')}
    env['OMP_NUM_THREADS'] = '1'
    if Path('/sys/class/net/lo').exists():
        env['GLOO_SOCKET_IFNAME'] = 'lo'  # loopback only
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2',
                        str(script), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    results = [json.loads(ln.split('RESULT ', 1)[1]) for ln in r.stdout.splitlines() if 'RESULT ' in ln]
    assert sorted(x['rank'] for x in results) == [0, 1]
    for key in ('timm', 'bytes'):
        ids = [[int(np.abs(levels - v).argmin()) for v in x[key]] for x in results]
        assert [len(i) for i in ids] == [8, 8], key
        assert sorted(ids[0] + ids[1]) == list(range(16)), (key, ids)
    assert all(x['len'] == [4, 4] for x in results)
