"""The training loader's workers. Persistent ones: the same processes every epoch, the batches fresh workers
gave, the same batches after a resume (train/worker_seeds.py). Their batch, made in shared memory
(data/collate.py); no no-op colour jitter in their transform."""
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.loader import fast_collate
from trainhelp import make_folder

from timm_alexnet_split import cli, train
from timm_alexnet_split.data import jpeg
from timm_alexnet_split.data.collate import collate_uint8
from timm_alexnet_split.train import loaders

CFG = {'input_size': (3, 32, 32), 'crop_pct': 0.875, 'interpolation': 'bilinear', 'mean': (0.5,) * 3,
       'std': (0.25,) * 3}
AUG = ['--paper-crop', '--color-jitter', '0.3', '--hflip', '0.5', '--reprob', '0', '-b', '4', '--workers', '2',
       '--device', 'cpu', '--seed', '1']


@pytest.fixture(scope='module')
def folder(module_tmp):
    return make_folder(module_tmp / 'images', {'train': 4, 'validation': 1}, size=(40, 36))


@pytest.fixture(scope='module')
def shards(folder, module_tmp):
    out = module_tmp / 'shards'
    assert cli.main(['prepare-shards', str(folder), str(out), '--size', '36', '--shard-size', '3',
                     '--workers', '1']) == 0
    return out


def _loader(argv, persistent, monkeypatch):
    monkeypatch.setattr(loaders, 'keeps_workers', lambda args, ds: persistent and args.workers > 0)
    args = train.parse_args(argv)
    args.distributed, args.world_size, args.rank, args.prefetcher = False, 1, 0, True
    train_ds, _, _ = train.data.build_datasets(args)
    loader, _ = loaders.build_loaders(args, CFG, torch.device('cpu'), train_ds, None, torch.float32)
    return loader


def _epochs(loader, epochs, seed=7):
    """Every batch of ``epochs`` epochs, the default generator seeded first (as a run's --seed does)."""
    torch.manual_seed(seed)
    out = []
    for epoch in epochs:
        _set_epoch(loader, epoch)
        out.append([(x.clone(), y.clone()) for x, y in loader])
    return out


def _set_epoch(loader, epoch):
    if hasattr(loader.sampler, 'set_epoch'):  # shards (a map-style set's sampler draws from the default generator)
        loader.sampler.set_epoch(epoch)


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


@pytest.mark.parametrize('source', ['folder', 'shards'])
def test_persistent_workers_give_the_batches_fresh_workers_gave(source, folder, shards, monkeypatch):
    data = ['--data-dir', str(folder)] if source == 'folder' else ['--dataset', 'wds/s', '--data-dir', str(shards),
                                                                  '--val-split', '']
    fresh = _loader([*data, *AUG], False, monkeypatch)
    kept = _loader([*data, *AUG], True, monkeypatch)
    assert not loaders._torch_loader(fresh).persistent_workers and loaders._torch_loader(kept).persistent_workers
    try:
        a, b = _epochs(fresh, range(3)), _epochs(kept, range(3))
        assert all(_same(x, y) for x, y in zip(a, b))
        assert not _same(b[0], b[1])  # and the epochs differ: crops, flips and jitter are drawn anew
    finally:
        loaders.shut_down_workers(kept)


def test_a_resumed_epoch_gets_the_continued_runs_batches(folder, monkeypatch):
    argv = ['--data-dir', str(folder), *AUG]
    run = _loader(argv, True, monkeypatch)
    resumed = _loader(argv, True, monkeypatch)
    try:
        torch.manual_seed(7)
        list(run)
        state = torch.get_rng_state()  # what a checkpoint after epoch 0 saves
        continued = [(x.clone(), y.clone()) for x, y in run]
        torch.set_rng_state(state)
        assert _same([(x.clone(), y.clone()) for x, y in resumed], continued)
    finally:
        loaders.shut_down_workers(run, resumed)


class _Pids(torch.utils.data.Dataset):
    transform = None

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return self.transform(os.getpid())


def test_the_workers_persist_across_epochs_and_end_with_the_run():
    from timm_alexnet_split.train.worker_seeds import persist_workers
    dl = torch.utils.data.DataLoader(_Pids(), batch_size=4, num_workers=2, persistent_workers=True)
    loader = persist_workers(dl, dl, 'all')
    pids = [sorted(set(torch.cat(list(loader)).tolist())) for _ in range(3)]
    assert pids[0] == pids[1] == pids[2] and os.getpid() not in pids[0] and len(pids[0]) == 2
    loaders.shut_down_workers(loader)
    assert dl._iterator is None


def test_keeps_workers_only_where_the_order_is_not_the_workers_seed(folder, shards):
    def ds_for(*argv):
        args = train.parse_args([*argv, '--workers', '2'])
        args.distributed, args.world_size, args.rank = False, 1, 0
        return args, train.data.build_datasets(args)[0]
    args, ds = ds_for('--data-dir', str(folder))
    assert loaders.keeps_workers(args, ds)
    args.worker_seeding = 'custom'
    assert not loaders.keeps_workers(args, ds)
    args, ds = ds_for('--dataset', 'wds/s', '--data-dir', str(shards), '--val-split', '')
    assert loaders.keeps_workers(args, ds)
    args.workers = 0
    assert not loaders.keeps_workers(args, ds)


# ---------------------------------------------------------------------------------------------------------------------
# the worker's batch
# ---------------------------------------------------------------------------------------------------------------------
def _items(kind):
    rng = np.random.default_rng(0)
    hwc = [rng.integers(0, 256, (9, 7, 3), dtype=np.uint8) for _ in range(5)]
    if kind == 'tensor':  # torchvision's pil_to_tensor: a CHW view of HWC pixels
        return [(torch.from_numpy(a).permute(2, 0, 1), i) for i, a in enumerate(hwc)]
    return [(np.rollaxis(a, 2), float(i)) for i, a in enumerate(hwc)]  # timm's ToNumpy


@pytest.mark.parametrize('kind', ['tensor', 'array'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_collate_uint8_is_timms_fast_collate(kind, channels_last):
    items = _items(kind)
    want_x, want_y = fast_collate(items)
    x, y = collate_uint8(items, channels_last)
    assert torch.equal(x, want_x) and torch.equal(y, want_y) and y.dtype == torch.long
    assert x.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if kind == 'tensor':  # not all uint8: timm's own (which casts)
        mixed = items[:2] + [(torch.full((3, 9, 7), 2.0), 0)]
        assert torch.equal(collate_uint8(mixed)[0], fast_collate(mixed)[0])


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return _items('tensor')[i]


def _where_made(batch):
    x, _ = collate_uint8(batch)
    return x, torch.tensor(x.is_shared())


def test_a_workers_batch_is_made_in_shared_memory():
    """Made there, the batch crosses to the main process without a copy (a batch in ordinary memory is copied)."""
    dl = torch.utils.data.DataLoader(_Images(), batch_size=4, num_workers=1, collate_fn=_where_made)
    x, shared_in_worker = next(iter(dl))
    assert shared_in_worker.item() and torch.equal(x, fast_collate([_items('tensor')[i] for i in range(4)])[0])
    assert not collate_uint8(_items('tensor'))[0].is_shared()  # in the main process: ordinary memory


@pytest.mark.parametrize('jitter, has_jitter', [('0', False), ('0.3', True)])
def test_colour_jitter_0_puts_no_jitter_in_the_workers_transform(folder, jitter, has_jitter, monkeypatch):
    """--color-jitter 0 (every recipe's) was a ColorJitter of zeros: nothing changed, ~4% of a worker's time."""
    argv = ['--data-dir', str(folder), *AUG, '--color-jitter', jitter]
    loader = _loader(argv, False, monkeypatch)
    names = [type(t).__name__ for t in loader.dataset.transform.transforms]
    assert ('ColorJitter' in names) == has_jitter and 'PaperCrop' in names


class _Slow:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        time.sleep(0.02)
        return self.transform(img)


def test_an_epoch_left_unfinished_leaves_the_next_one_as_fresh_workers_give_it(folder, monkeypatch):
    """Samples still queued in the workers from an epoch given up would take the next epoch's seed."""
    argv = ['--data-dir', str(folder), *AUG, '-b', '2']
    fresh, kept = _loader(argv, False, monkeypatch), _loader(argv, True, monkeypatch)
    for loader in (fresh, kept):  # slow samples: some still queued when the epoch is given up
        ds = loaders._torch_loader(loader).dataset
        ds.transform = _Slow(ds.transform)
    try:
        runs = []
        for loader in (fresh, kept):
            torch.manual_seed(5)
            next(iter(loader))  # one batch of epoch 0, the rest left in the workers' queues
            runs.append([(x.clone(), y.clone()) for x, y in loader])
        assert _same(*runs)
    finally:
        loaders.shut_down_workers(kept)


def test_synthetic_input_ends_the_workers_once_it_has_its_batch(folder, monkeypatch):
    kept = _loader(['--data-dir', str(folder), *AUG], True, monkeypatch)
    first = loaders.FirstBatchAgain(kept, torch.device('cpu'))
    assert len(list(first)) == len(kept) and loaders._torch_loader(kept)._iterator is None


def test_collate_uint8_drops_further_fields_as_timm_does():
    items = [(im, t, 'feature') for im, t in _items('tensor')]
    assert all(torch.equal(a, b) for a, b in zip(collate_uint8(items), fast_collate(items)))


@pytest.mark.parametrize('source', ['folder', 'shards'])
def test_the_trainers_loaders_get_their_batch_buffers_back_through_timms_prefetcher(source, folder, shards,
                                                                                      monkeypatch):
    """data/batch_buffers.py: the training and evaluation loaders' workers reuse their shared-memory buffers once
    timm's PrefetchLoader (here on the CPU, which normalises each batch into a new tensor) has dropped a batch."""
    data = ['--data-dir', str(folder)] if source == 'folder' else ['--dataset', 'wds/s', '--data-dir', str(shards)]
    monkeypatch.setattr(loaders, 'keeps_workers', lambda args, ds: True)
    args = train.parse_args([*data, *AUG])
    args.distributed, args.world_size, args.rank, args.prefetcher = False, 1, 0, True
    train_ds, eval_ds, _ = train.data.build_datasets(args)
    loader, loader_eval = loaders.build_loaders(args, CFG, torch.device('cpu'), train_ds, eval_ds, torch.float32)
    try:
        for made in (loader, loader_eval):
            buffers = loaders._torch_loader(made).collate_fn
            buffers = getattr(buffers, 'collate', buffers).buffers  # evaluation: inside SkipNoneCollate
            assert int(buffers.released.count_nonzero()) == 0
            assert sum(x.shape[0] for x, _ in made) > 0
            assert int(buffers.released.count_nonzero()) > 0  # a batch dropped: its worker was told
    finally:
        loaders.shut_down_workers(loader)


PLAIN_AUG = ['--paper-crop', '--color-jitter', '0', '--hflip', '0.5', '--vflip', '0.5', '--reprob', '0', '-b', '4',
             '--device', 'cpu', '--seed', '1']


@pytest.fixture(scope='module')
def wide_shards(module_tmp):
    """Shards of 47 x 36 images (--keep-aspect): the centre square's offset, 5.5, is rounded (to 6)."""
    folder = make_folder(module_tmp / 'wide', {'train': 4}, size=(47, 36))
    out = module_tmp / 'wide-shards'
    assert cli.main(['prepare-shards', str(folder), str(out), '--size', '36', '--keep-aspect', '--shard-size', '3',
                     '--workers', '1']) == 0
    return out


@pytest.mark.parametrize('crop_pct, workers, layout', [(0.875, 2, []), (0.875, 0, ['--channels-last']),
                                                       (0.9, 2, [])])  # 36 px: 0.875 crops as is, 0.9 resizes
def test_shard_pixels_cropped_as_arrays_give_the_batches_pil_images_gave(wide_shards, monkeypatch, crop_pct, workers,
                                                                          layout):
    """The paper crop and flips on the decoded array (no PIL copies) draw and give exactly what they did on PIL
    images; any other step after them (colour jitter here) keeps the PIL images."""
    monkeypatch.setitem(CFG, 'crop_pct', crop_pct)
    argv = ['--dataset', 'wds/s', '--data-dir', str(wide_shards), '--val-split', '', *PLAIN_AUG,
            '--workers', str(workers), *layout]
    arrays = _loader(argv, True, monkeypatch)
    assert arrays.dataset.reader.arrays
    if crop_pct == 0.875:  # the arrays are cropped as they are: no PIL image is made of them
        assert jpeg.decoder_name().startswith('simplejpeg')  # its first-use check (which uses PIL) done here
        monkeypatch.setattr(Image, 'fromarray', lambda *a, **k: (_ for _ in ()).throw(AssertionError('PIL used')))
    try:
        a = _epochs(arrays, range(2))
    finally:
        loaders.shut_down_workers(arrays)
    monkeypatch.undo()
    monkeypatch.setitem(CFG, 'crop_pct', crop_pct)
    monkeypatch.setattr(loaders, '_EXACT_ON_TENSORS', ())
    pil = _loader(argv, True, monkeypatch)
    assert not pil.dataset.reader.arrays
    try:
        b = _epochs(pil, range(2))
    finally:
        loaders.shut_down_workers(pil)
    assert all(_same(x, y) for x, y in zip(a, b)) and len(a[0]) > 1
    # NHWC in memory whatever --channels-last says (loaders.WORKER_BATCHES_NHWC: the step puts it in the model's)
    assert a[0][0][0].shape[1:] == (3, 32, 32) and a[0][0][0].is_contiguous(memory_format=torch.channels_last)
    monkeypatch.undo()
    jitter = _loader(['--dataset', 'wds/s', '--data-dir', str(wide_shards), '--val-split', '', *AUG], True, monkeypatch)
    assert not jitter.dataset.reader.arrays
    loaders.shut_down_workers(jitter)


class _Records(torch.nn.Module):
    """A model that notes the memory layout of each batch it is given (and returns logits for 3 classes)."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3, 3)
        self.layouts = []

    def forward(self, x):
        self.layouts.append('nchw' if x.is_contiguous() else 'nhwc' if
                            x.is_contiguous(memory_format=torch.channels_last) else 'other')
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize('channels_last', [False, True])
def test_the_workers_nhwc_batches_reach_the_model_in_its_own_layout(folder, monkeypatch, channels_last):
    """The workers' uint8 batches are NHWC in memory with or without --channels-last (one straight copy of each
    decoded HWC image); training and evaluation hand the model NCHW, or channels_last when asked, with the same
    values."""
    from types import SimpleNamespace

    from timm_alexnet_split.train import loop
    argv = ['--data-dir', str(folder), *AUG] + (['--channels-last'] if channels_last else [])
    args = train.parse_args(argv)
    args.distributed, args.world_size, args.rank, args.prefetcher = False, 1, 0, True
    train_ds, eval_ds, _ = train.data.build_datasets(args)
    loader, loader_eval = loaders.build_loaders(args, CFG, torch.device('cpu'), train_ds, eval_ds, torch.float32)
    try:
        x, y = next(iter(loaders._torch_loader(loader)))
        assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        model = _Records()
        step = SimpleNamespace(args=args, pca=None, device=torch.device('cpu'), model_dtype=torch.float32)
        batch = next(iter(loader))[0]  # through timm's prefetcher: normalised, still NHWC
        given, _ = loop._prepare_batch(step, batch, y)
        assert torch.equal(given, batch)
        model(given)
        loop.evaluate(model, loader_eval, torch.nn.CrossEntropyLoss(), torch.device('cpu'),
                      channels_last=channels_last)
    finally:
        loaders.shut_down_workers(loader)
    want = 'nhwc' if channels_last else 'nchw'
    assert len(model.layouts) > 1 and set(model.layouts) == {want}


@pytest.mark.parametrize('ten_crop', [False, True])
def test_the_trainers_evaluation_workers_persist_and_give_what_fresh_workers_give(folder, ten_crop, monkeypatch):
    """The trainer evaluates every epoch: its evaluation loader keeps its workers between passes (timm's train.py
    does too), the same processes each time, with the batches a fresh loader (`validate`'s) gives; the run's end
    ends them."""
    extra = ['--ten-crop'] if ten_crop else []
    args = train.parse_args(['--data-dir', str(folder), *AUG, *extra])
    args.distributed, args.world_size, args.rank, args.prefetcher = False, 1, 0, True
    train_ds, eval_ds, _ = train.data.build_datasets(args)
    _, kept = loaders.build_loaders(args, CFG, torch.device('cpu'), train_ds, eval_ds, torch.float32)
    fresh = loaders.eval_loader(train.data.build_datasets(args)[1], CFG, 4, 2, torch.device('cpu'),
                                ten_crop=ten_crop)
    inner = loaders._torch_loader(kept)
    assert inner.persistent_workers and not loaders._torch_loader(fresh).persistent_workers
    try:
        passes, pids, streams = [], [], []
        torch.manual_seed(3)
        for _ in range(3):
            passes.append([(x.clone(), y.clone()) for x, y in kept])
            pids.append(sorted(w.pid for w in inner._iterator._workers))
        streams.append(torch.get_rng_state())
        torch.manual_seed(3)
        fresh_passes = [[(x.clone(), y.clone()) for x, y in fresh] for _ in range(3)]
        streams.append(torch.get_rng_state())
        assert pids[0] == pids[1] == pids[2] and all(w.is_alive() for w in inner._iterator._workers)
        assert all(_same(p, q) for p, q in zip(passes, fresh_passes))
        assert torch.equal(*streams)  # each pass drew what a fresh iterator draws: exact resume, the old stream
        assert len(passes[0]) > 0
        workers = list(inner._iterator._workers)
    finally:
        loaders.shut_down_workers(kept)
    assert not any(w.is_alive() for w in workers)
