"""The device decoding path (--decode gpu|device) in the trainer itself, and each shard sample once per epoch (issue 18).

The GPU path runs here on the CPU (``--decode device``): the same DeviceDecodeLoader, batched crops and whole
batches, without nvjpeg. What only a GPU shows (the decoder's stream race) is the CUDA test at the end."""
import json
import math
import re
import statistics

import numpy as np
import pytest
import torch
from trainhelp import make_folder, run_train, summary_rows

from timm_alexnet_split import cli, train
from timm_alexnet_split.data import decode, shard_reader
from timm_alexnet_split.errors import UserError

COLOURS = {'blue': (40, 40, 200), 'red': (200, 40, 40)}


@pytest.fixture(scope='module')
def shards(module_tmp):
    """12 training images (2 colours) in 3 shards of 4, 4 validation images, at 72 px."""
    src = make_folder(module_tmp / 'images', {'train': 6, 'validation': 2}, size=(90, 80), colours=COLOURS)
    out = module_tmp / 'shards'
    assert cli.main(['prepare-shards', str(src), str(out), '--size', '72', '--shard-size', '4', '--workers', '1']) == 0
    return out


def _train(out, tmp_path, name, *extra):
    """Four full-batch epochs (12 images, batch 12), no augmentation, no dropout: the loss depends on the data and
    the seed, not on the order the readers deliver the samples in."""
    rc = run_train('--dataset', 'wds/shards', '--data-dir', out, '--model-kwargs', 'fc_width=64', 'init=caffe',
                   '--img-size', '64', '-b', '12', '--epochs', '4', '--lr', '0.0003', '--opt', 'adamw',
                   '--sched', 'plateau',
                   '--warmup-epochs', '0', '--smoothing', '0', '--drop', '0', '--no-aug', '--pca-lighting', '0',
                   '--workers', '1', '--device', 'cpu', '--seed', '5', '--checkpoint-hist', '1', '--output', tmp_path,
                   '--experiment', name, *extra)
    assert rc == 0
    return [float(r['train_loss']) for r in summary_rows(tmp_path / name)], summary_rows(tmp_path / name)


def test_a_resumed_device_decoding_run_ends_as_a_straight_one(shards, tmp_path):
    """--decode device with loader workers (they persist) and random crops and flips: three epochs in one go, and
    one then a resume to three, give the same losses and weights (the workers' iterator is created once a run, and
    once more by a resume: its seed is drawn from a generator of its own)."""
    opts = ['--dataset', 'wds/shards', '--data-dir', shards, '--model-kwargs', 'fc_width=64', '--img-size', '64',
            '-b', '4', '--lr', '0.001', '--warmup-epochs', '0', '--decode', 'device', '--paper-crop', '--color-jitter', '0',
            '--workers', '1',
            '--device', 'cpu', '--seed', '2', '--checkpoint-hist', '1', '--output', tmp_path]
    assert run_train(*opts, '--epochs', '3', '--experiment', 'straight') == 0
    assert run_train(*opts, '--epochs', '1', '--experiment', 'resumed') == 0
    assert run_train('--resume', tmp_path / 'resumed' / 'last.pth.tar', '--epochs', '3') == 0
    losses = [[r['train_loss'] for r in summary_rows(tmp_path / name)] for name in ('straight', 'resumed')]
    assert len(losses[0]) == 3 and losses[0] == losses[1]
    a, b = (torch.load(tmp_path / name / 'last.pth.tar', map_location='cpu', weights_only=True)['state_dict']
            for name in ('straight', 'resumed'))
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=1e-6, msg=key)


def _close_and_falling(device_losses, cpu_losses):
    assert all(math.isfinite(v) for v in device_losses + cpu_losses)
    assert device_losses[-1] < device_losses[0] - 0.005 and cpu_losses[-1] < cpu_losses[0] - 0.005, \
        (device_losses, cpu_losses)
    # libjpeg through torchvision vs PIL and torch's vs PIL's antialiased resize: the pixels differ by a level or so
    # (seen: 0.6771 vs 0.6769 after four steps)
    np.testing.assert_allclose(device_losses, cpu_losses, rtol=0.01)


def test_device_decoding_trains_as_cpu_decoding_does_from_the_same_seed(shards, tmp_path, capsys):
    device, rows = _train(shards, tmp_path, 'device', '--decode', 'device')
    err = capsys.readouterr().err
    assert '--decode device: batches of shard JPEGs decoded on cpu by the training process' in err  # no fallback
    cpu, _ = _train(shards, tmp_path, 'cpu', '--decode', 'cpu')
    _close_and_falling(device, cpu)
    assert all(float(r['eval_top1']) >= 0 for r in rows)  # validation decoded on the device too


@pytest.mark.slow
def test_device_decoding_under_torch_compile_trains_as_eager(shards, tmp_path):
    compiled, _ = _train(shards, tmp_path, 'compiled', '--decode', 'device', '--torchcompile', 'inductor')
    eager, _ = _train(shards, tmp_path, 'eager', '--decode', 'cpu')
    _close_and_falling(compiled, eager)


@pytest.mark.parametrize('extra, says', [
    (['--no-aug', '--interpolation', 'bicubic'], "resizes bilinear: the interpolation 'bicubic'"),
    (['--paper-crop', '--color-jitter', '0', '--train-interpolation', 'bicubic'],
     'does not implement --train-interpolation bicubic'),
    (['--no-aug', '--input-size', '3', '64', '72'], 'is not square'),
])
def test_device_decoding_refuses_what_it_would_crop_otherwise_than_cpu_decoding(shards, tmp_path, extra, says):
    """The device path resizes bilinear and crops squares: other interpolations or sizes are one line, not other
    crops than --decode cpu's without a word."""
    from timm_alexnet_split.errors import UserError
    with pytest.raises(UserError, match=re.escape(says)):
        run_train('--dataset', 'wds/shards', '--data-dir', shards, '--model-kwargs', 'fc_width=64', '--img-size', '64',
                  '-b', '4', '--epochs', '1', '--decode', 'device', '--workers', '0', '--device', 'cpu',
                  '--pca-lighting', '0', '--output', tmp_path, '--experiment', 'refused', *extra)
    assert not (tmp_path / 'refused').exists()


def test_gpu_decoding_without_cuda_says_it_falls_back_and_device_does_not(shards):
    args = train.parse_args(['--dataset', 'wds/shards', '--data-dir', str(shards), '--decode', 'device', '--no-aug'])
    assert train.loaders.decode_mode(args, torch.device('cpu')) == 'device'
    args.decode = 'gpu'
    assert train.loaders.decode_mode(args, torch.device('cpu')) == 'cpu'


# ---------------------------------------------------------------------------------------------------------------------
# each sample once per epoch
# ---------------------------------------------------------------------------------------------------------------------
def _byte_batches(sizes):
    """Batches of distinct one-byte 'images' (their value is their identity) of the given sizes."""
    k, out = 0, []
    for n in sizes:
        out.append(([torch.tensor([k + i], dtype=torch.uint8) for i in range(n)], torch.arange(k, k + n)))
        k += n
    return out


def test_whole_batches_join_the_readers_partial_batches_and_keep_each_sample_once():
    # three readers of 10, 7 and 5 samples in batches of 4: 4 4 2 | 4 3 | 4 1, interleaved as a loader does
    batches = _byte_batches([4, 4, 4, 4, 4, 2, 3, 1])
    got = list(shard_reader.whole_batches(batches, 4, steps=5))
    assert [len(d) for d, _ in got] == [4] * 5  # 22 samples: 5 whole batches, 2 left out
    seen = [int(v) for d, t in got for v in t]
    assert seen == [int(x) for d, _ in got for x in torch.cat(d)]  # labels travel with their images
    assert len(set(seen)) == 20 and set(seen) <= set(range(22))
    assert len(list(shard_reader.whole_batches(_byte_batches([4, 4, 4, 4, 4, 2, 3, 1]), 4, steps=3))) == 3


def test_device_loader_epoch_trains_every_sample_but_fewer_than_one_batch(shards):
    """3 shards of 4 read by 2 workers (8 and 4 samples) in batches of 5: 12 samples make 2 whole batches; the
    old reader-by-reader batching trained 1 (8 -> 5, 4 -> none) and left 7 out."""
    args = train.parse_args(['--dataset', 'wds/shards', '--data-dir', str(shards), '--decode', 'device', '--no-aug',
                             '-b', '5', '--workers', '2', '--val-split', ''])
    args.distributed, args.world_size, args.rank, args.prefetcher = False, 1, 0, True
    cfg = {'input_size': (3, 64, 64), 'crop_pct': 0.875, 'interpolation': 'bilinear', 'mean': (0,) * 3,
           'std': (1 / 255,) * 3}
    loader, _ = train.loaders.device_decode_loaders(args, cfg, torch.device('cpu'), None, torch.float32)
    assert len(loader) == 2 and loader.dataset.dropped == 2
    orders = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        batches = list(loader)
        assert [x.shape[0] for x, _ in batches] == [5, 5]
        orders.append([v for x, _ in batches for v in x.sum((1, 2, 3)).tolist()])
        assert len(set(orders[-1])) == 10  # ten different images
    assert orders[0] != orders[1]  # a new order each epoch


def test_cpu_decoding_from_our_shards_trains_each_sample_at_most_once_and_says_how_many_are_left_out(shards, caplog):
    args = train.parse_args(['--dataset', 'wds/shards', '--data-dir', str(shards), '--no-aug', '-b', '3',
                             '--workers', '2', '--val-split', '', '--no-prefetcher', '--mean', '0', '0', '0',
                             '--std', '1', '1', '1'])
    args.distributed, args.world_size, args.rank, args.prefetcher = False, 1, 0, False
    train_ds, _, _ = train.data.build_datasets(args)
    assert isinstance(train_ds.reader, shard_reader.ShardSamples)
    cfg = {'input_size': (3, 64, 64), 'crop_pct': 0.875, 'interpolation': 'bilinear', 'mean': (0,) * 3, 'std': (1,) * 3}
    with caplog.at_level('WARNING'):
        loader, _ = train.loaders.build_loaders(args, cfg, torch.device('cpu'), train_ds, None, torch.float32)
    # readers hold 8 and 4 samples: 6 + 3 trained in batches of 3, 3 left out, said exactly
    assert [r.getMessage() for r in caplog.records if 'left out' in r.getMessage()] == [
        'WARNING: training from shards: 3 of the 12 training samples (25.0%) are left out of each epoch: each of the '
        '2 readers (processes x loader workers) trains whole batches of 3 only (docs/data.md: "Each sample once per '
        'epoch")']
    assert len(loader) == 3
    images = [tuple(np.round(x.numpy(), 3).ravel()[:64]) for xb, _ in loader for x in xb]
    assert len(images) == 9 and len(set(images)) == 9  # no sample twice


def _device_loader(shards, batch=4, workers=0, train=True):
    entry = shard_reader.check_split(str(shards), 'train')
    ds = shard_reader.ShardBytes(str(shards), entry, batch, train, workers=max(workers, 1))
    inner = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=lambda b: b)
    return decode.DeviceDecodeLoader(inner, torch.device('cpu'), (64, 64), 72, train, (0.5,) * 3, (1 / 255,) * 3)


def test_decoding_ahead_in_a_thread_gives_the_same_batches_and_raises_its_errors(shards, monkeypatch):
    """The CUDA loader decodes in a thread, ahead of the step; the same code on the CPU (threaded) must give the
    batches the main-process loop gives from the same seed, in order, and raise what the thread raised."""
    loader = _device_loader(shards)
    torch.manual_seed(0)
    plain = [(x.clone(), y.clone()) for x, y in loader]
    loader.threaded = True
    torch.manual_seed(0)
    ahead = list(loader)
    assert len(plain) == len(ahead) == 3
    for (x0, y0), (x1, y1) in zip(plain, ahead):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    calls = []

    def fails_on_the_second(data, target):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError('decoder broke')
        return orig(data, target)
    orig = loader._decode
    monkeypatch.setattr(loader, '_decode', fails_on_the_second)
    with pytest.raises(RuntimeError, match='decoder broke'):
        list(loader)


def test_a_training_batch_with_no_decodable_image_is_left_out_alone_and_an_error_in_a_distributed_run(shards):
    loader = _device_loader(shards)
    junk = [torch.frombuffer(bytearray(b'not a jpeg at all'), dtype=torch.uint8)] * 2
    assert loader._decode(junk, torch.tensor([0, 1])) is None  # one process: the batch is left out, with a warning
    loader.dataset.world = 2  # one process of two: leaving a step out would keep the other waiting in all_reduce
    with pytest.raises(UserError, match='cannot skip a step'):
        loader._decode(junk, torch.tensor([0, 1]))


# ---------------------------------------------------------------------------------------------------------------------
# CUDA: the decoder never writes into memory the training step still reads
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_decoding_on_cuda_leaves_the_training_streams_tensors_intact(shards):
    """pytorch/vision#9606: nvJPEG writes its output before work queued on the stream has run, into blocks the
    caching allocator has just recycled. Tensors freed while reductions over them are still queued must still
    reduce to their known values while the loader decodes the next batches."""
    dev = torch.device('cuda')
    loader = _device_loader(shards)
    loader.device = dev
    wrong = 0
    for _ in range(20):
        held = [torch.full((3, 72, 72), float(i), device=dev) for i in range(8)]
        torch.cuda.synchronize()
        a = torch.randn(4096, 4096, device=dev)
        for _ in range(5):
            a = a @ a / 64  # keep the stream busy
        sums = [t.sum() for t in held]
        del held  # freed while the reductions over them are queued
        for x, _ in loader:
            x.sum()
        torch.cuda.synchronize()
        wrong += sum(abs(s.item() - i * 3 * 72 * 72) > 1e-3 * (1 + i * 3 * 72 * 72) for i, s in enumerate(sums))
    assert wrong == 0


def test_synthetic_input_trains_on_one_batch_again_and_says_the_metrics_mean_nothing(shards, tmp_path, capsys):
    rc = run_train('--dataset', 'wds/shards', '--data-dir', shards, '--model-kwargs', 'fc_width=64', '--img-size', '64',
                   '-b', '4', '--epochs', '1', '--no-aug', '--pca-lighting', '0', '--workers', '0', '--device', 'cpu',
                   '--synthetic-input', '--val-split', '', '--output', tmp_path, '--experiment', 'syn')
    assert rc == 0
    assert 'losses and accuracies mean nothing' in capsys.readouterr().err
    (row,) = summary_rows(tmp_path / 'syn')
    assert float(row['train_img_s']) > 0
    first = train.loaders.FirstBatchAgain([(torch.ones(2, 3), torch.zeros(2)), (torch.zeros(2, 3), torch.ones(2))],
                                          torch.device('cpu'))
    assert len(first) == 2 and [x.sum().item() for x, _ in first] == [6.0, 6.0]


@pytest.mark.slow
def test_bench_train_input_trains_with_each_decoder_and_prints_ratios_to_synthetic_input(tmp_path, capsys):
    out = tmp_path / 'train-input.json'
    assert cli.main(['bench', '--train-input', '--train-images-per-class', '4', '--train-epochs', '2',
                     '--batch-size', '8', '--train-workers', '1', '--json', str(out), '--data-dir', str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    runs = result['input']['runs']
    assert set(runs) == {'synthetic', 'cpu', 'device'}
    for name, r in runs.items():
        assert len(r['img_s']) == 2 and all(v > 0 for v in r['img_s']), name
        assert all(math.isfinite(v) for v in r['loss']), name
    assert set(result['input']['ratios']) == {'cpu', 'device'}
    assert re.search(r'goal: shards \+ (cpu|device) decoding \d+\.\d\dx the synthetic-input rate (meets|MISSES)', printed)
    assert re.search(r"goal: per-core rate x workers / the workers' epoch rate \d+\.\d\d (meets|MISSES) the goal <= 1.2",
                     printed)
    loader = result['loader']
    assert loader['workers'] == 1 and loader['per_core'] > 0
    timed = loader['per_core_timings']  # one after each of the seven epochs: each epoch's ratio shares its minute
    assert len(timed) == 7 and loader['per_core'] == statistics.median(timed)
    assert {k: len(v) for k, v in loader['paired_ratios'].items()} == {'start': 1, 'workers_batches': 3, 'prefetched': 3}
    assert all(loader['ratios'][k] == statistics.median(v) for k, v in loader['paired_ratios'].items())
    assert {k: len(v) for k, v in loader['epoch_img_s'].items()} == {'start': 1, 'workers_batches': 3, 'prefetched': 3}
    assert all(v > 0 for v in loader['ratios'].values()) and loader['ratio'] == loader['ratios']['workers_batches']
    assert [p.name for p in tmp_path.iterdir()] == ['train-input.json']  # the generated data and runs are gone


@pytest.mark.parametrize('extra, says', [(['--train-workers', '0'], '--train-workers must be at least 1'),
                                         (['--decoders', 'gpu'], '--decoders gpu needs a CUDA device')])
def test_bench_train_input_refuses_a_measurement_that_would_mislead(tmp_path, capsys, extra, says):
    out = tmp_path / 'train-input.json'
    assert cli.main(['bench', '--train-input', '--json', str(out), *extra]) == 2
    assert says in capsys.readouterr().err and not out.exists()


def test_the_loader_measurement_leaves_the_process_its_threads(tmp_path, monkeypatch):
    from timm_alexnet_split import trainbench
    shards = trainbench.make_shards(tmp_path, 2, 1, lambda line: None)
    def epochs_after_timings(*args, per_core):  # the threads the loader's epochs would run with, between timings
        timings = [per_core() for _ in range(3)]
        return {**{k: [float(torch.get_num_threads())] for k in ('start', 'workers_batches', 'prefetched')},
                'per_core': timings}
    monkeypatch.setattr(trainbench, 'loader_epoch_rates', epochs_after_timings)
    torch.set_num_threads(2)
    result = trainbench.loader_section(shards, 8, 1, lambda line: None)
    assert result['epoch_img_s']['workers_batches'] == [2.0] and torch.get_num_threads() == 2  # the timing ran at one


def test_each_loader_epoch_is_held_to_the_per_core_rate_timed_either_side_of_it():
    from timm_alexnet_split.trainbench import paired_ratios
    rates = {'start': [50.0], 'workers_batches': [100.0, 100.0], 'prefetched': [80.0, 40.0],
             'per_core': [100.0, 120.0, 80.0, 160.0, 200.0]}  # after the start, then after each later epoch
    got = paired_ratios(rates, workers=2)
    assert got == {'start': [4.0], 'prefetched': [2.75, 6.0], 'workers_batches': [2.0, 3.6]}  # epochs 1, 3 and 2, 4
