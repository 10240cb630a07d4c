"""The trainer: run folder artefacts, exact resume, signals, unreadable images, divergence, options, evaluation.

Runs train the real alexnet_split_2 on a few 64-pixel images the tests draw themselves (one optimiser step
per epoch). The towers are the paper's; fc6/fc7 are narrowed to 64 (``fc_width``) so that a run folder takes
~70 MB of disk instead of ~1.3 GB. The SIGTERM test keeps the paper's 4096 (its steps must be slow enough to be
interrupted mid-epoch).
"""
import csv
import json
import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from trainhelp import BASE_OPTS, COLOURS, RUN_OPTS, interrupt_in_first_epoch, make_folder, run_train, summary_rows, summary_table

import timm_alexnet_split  # noqa: F401  (registers the models)
from timm_alexnet_split import cli, train
from timm_alexnet_split.errors import UserError
from timm_alexnet_split.schedule import PlateauDecay

SUMMARY_COLUMNS = ['epoch', 'train_loss', 'train_top1', 'train_img_s', 'eval_loss', 'eval_top1', 'eval_top5', 'lr']


@pytest.fixture(scope='module')
def data_dir(module_tmp):
    return make_folder(module_tmp / 'data', {'train': 2, 'validation': 1}, corrupt=True)


@pytest.fixture(scope='module')
def trained_run(data_dir, module_tmp):
    """Two epochs in one go: the reference for the artefact, resume and validate tests."""
    out = module_tmp / 'runs'
    assert run_train('--data-dir', data_dir, *RUN_OPTS, '--epochs', 2, '--output', out, '--experiment', 'full') == 0
    return out / 'full'


# ---------------------------------------------------------------------------------------------------------------------
# a run and its folder
# ---------------------------------------------------------------------------------------------------------------------
def _without_rate(table):
    """summary.csv's rows less the images-per-second column (a wall-clock figure)."""
    col = table[0].index('train_img_s')
    return [row[:col] + row[col + 1:] for row in table]


def test_run_writes_every_artefact(trained_run):
    rows = summary_table(trained_run)
    assert rows[0] == SUMMARY_COLUMNS
    assert [int(r[0]) for r in rows[1:]] == [0, 1]
    assert all(math.isfinite(float(v)) for r in rows[1:] for v in r)

    for name in ('args.yaml', 'log.txt', 'last.pth.tar', 'model_best.pth.tar', 'last.safetensors',
                 'model_best.safetensors', 'acc.png', 'loss.png', 'class_map.txt'):
        assert (trained_run / name).is_file(), name
    for png in ('acc.png', 'loss.png'):
        assert (trained_run / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert (trained_run / 'class_map.txt').read_text().split() == sorted(COLOURS)

    ckpt = torch.load(trained_run / 'last.pth.tar', map_location='cpu', weights_only=True)
    assert ckpt['epoch'] == 1 and ckpt['complete'] is True and ckpt['arch'] == 'alexnet_split_2'
    assert {'state_dict', 'optimizer', 'scheduler', 'rng', 'args', 'data_config', 'class_names'} <= set(ckpt)
    assert ckpt['optimizer']['state'], 'optimizer momentum buffers are saved'
    assert {'python', 'numpy', 'torch'} <= set(ckpt['rng'])
    assert ckpt['args']['lr'] == 0.001 and ckpt['args']['num_classes'] == 3
    assert ckpt['class_names'] == sorted(COLOURS)
    best = torch.load(trained_run / 'model_best.pth.tar', map_location='cpu', weights_only=True)
    assert best['epoch'] in (0, 1)

    from safetensors.torch import load_file
    st = load_file(str(trained_run / 'last.safetensors'))
    assert st.keys() == ckpt['state_dict'].keys()
    assert all(torch.equal(st[k], ckpt['state_dict'][k]) for k in st)

    towers = json.loads((trained_run / 'conv1' / 'towers.json').read_text())
    assert towers == {'num_towers': 2, 'kernels_per_tower': [48, 48], 'channel_order': 'RGB'}
    snaps = sorted(p.name for p in (trained_run / 'conv1').glob('epoch_*.npy'))
    assert snaps == ['epoch_0000.npy', 'epoch_0001.npy', 'epoch_0002.npy']
    k0, k2 = (np.load(trained_run / 'conv1' / s) for s in (snaps[0], snaps[2]))
    assert k0.shape == k2.shape == (96, 3, 11, 11) and k2.dtype == np.float32
    sd = ckpt['state_dict']
    assert np.array_equal(k2, torch.cat([sd['towers.0.conv1.weight'], sd['towers.1.conv1.weight']]).numpy())
    assert not np.array_equal(k0, k2), 'conv1 moved during training'


@pytest.mark.parametrize('lrs', [[0.01] * 4, [0.01, 0.005, 0.001, 0.0], [0.01, 0.01, 0.001, 0.001] * 3],
                         ids=['constant', 'cosine-to-zero', 'steps'])
def test_curves_are_drawn_for_every_kind_of_schedule(tmp_path, lrs):
    """A learning rate that is constant, reaches 0 (no log axis then) or steps; validation columns left empty."""
    with open(tmp_path / 'summary.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(SUMMARY_COLUMNS)
        for e, lr in enumerate(lrs):
            w.writerow([e, 2.0 / (e + 1), 10.0 * e, '', '', '', lr])
    train.curves.plot_curves(tmp_path, title='t')
    for png in ('acc.png', 'loss.png'):
        assert (tmp_path / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not list(tmp_path.glob('.*.tmp.png'))


def test_args_yaml_is_resolved_and_reusable_as_config(trained_run):
    args = yaml.safe_load((trained_run / 'args.yaml').read_text())
    assert args['num_classes'] == 3 and args['lr'] == 0.001 and args['device'] == 'cpu'
    again = train.parse_args(['--config', str(trained_run / 'args.yaml')])
    assert again.epochs == 2 and again.paper_crop is True and again.pca_lighting == 0.1


def test_unreadable_image_is_skipped_counted_and_reported(trained_run):
    lines = (trained_run / 'skipped_images.txt').read_text().splitlines()
    assert lines and all(line.split('\t')[1].endswith('broken.jpg') for line in lines)
    log = (trained_run / 'log.txt').read_text()
    assert 'unreadable image' in log and 'skipped_images.txt' in log


def test_resume_ends_with_the_same_weights_and_metrics(trained_run, data_dir, tmp_path):
    assert run_train('--data-dir', data_dir, *RUN_OPTS, '--epochs', 1, '--output', tmp_path, '--experiment', 'part') == 0
    part = tmp_path / 'part'
    assert summary_table(part)[1:] != summary_table(trained_run)[1:]
    assert run_train('--resume', part / 'last.pth.tar', '--epochs', 2) == 0
    assert _without_rate(summary_table(part)) == _without_rate(summary_table(trained_run))
    a = torch.load(trained_run / 'last.pth.tar', map_location='cpu', weights_only=True)
    b = torch.load(part / 'last.pth.tar', map_location='cpu', weights_only=True)
    for key, value in a['state_dict'].items():
        torch.testing.assert_close(b['state_dict'][key], value, rtol=0, atol=1e-6, msg=key)
    assert a['scheduler']['num_decays'] == b['scheduler']['num_decays']
    assert a['scheduler']['best'] == b['scheduler']['best']
    assert np.array_equal(np.load(part / 'conv1' / 'epoch_0002.npy'), np.load(trained_run / 'conv1' / 'epoch_0002.npy'))
    assert (part / 'args-resume-epoch1.yaml').is_file() and (part / 'args.yaml').is_file()


def _same_weights(run_a, run_b):
    a = torch.load(run_a / 'last.pth.tar', map_location='cpu', weights_only=True)['state_dict']
    b = torch.load(run_b / 'last.pth.tar', map_location='cpu', weights_only=True)['state_dict']
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=1e-6, msg=key)


def test_a_resume_after_several_evaluations_is_exact(tmp_path):
    """Three epochs in one go, and one then a resume to three, with loader workers (the training and evaluation
    workers persist): the same summary and weights. A resume restarts the evaluation workers, so a pass that drew
    from the random stream only when it started them would put the resumed run one draw off from epoch 2."""
    data = make_folder(tmp_path / 'data', {'train': 6, 'validation': 1})
    opts = [*RUN_OPTS, '--workers', '2', '--output', tmp_path]
    assert run_train('--data-dir', data, *opts, '--epochs', 3, '--experiment', 'straight') == 0
    assert run_train('--data-dir', data, *opts, '--epochs', 1, '--experiment', 'resumed') == 0
    assert run_train('--resume', tmp_path / 'resumed' / 'last.pth.tar', '--epochs', 3) == 0
    straight, resumed = summary_table(tmp_path / 'straight'), summary_table(tmp_path / 'resumed')
    assert len(straight) == 4 and _without_rate(resumed) == _without_rate(straight)
    _same_weights(tmp_path / 'straight', tmp_path / 'resumed')


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    data = make_folder(tmp_path / 'data', {'train': 6, 'validation': 1})
    code, err = interrupt_in_first_epoch(['--data-dir', data, *BASE_OPTS, '-b', '2', '--workers', '0', '--epochs', '3',
                                          '--output', tmp_path, '--experiment', 'sig'],
                                         lambda proc: proc.send_signal(signal.SIGTERM))
    assert code == 128 + signal.SIGTERM, err
    assert 'Traceback' not in err and 'stopped by SIGTERM' in err
    ckpt = torch.load(tmp_path / 'sig' / 'recovery.pth.tar', map_location='cpu', weights_only=True)
    assert ckpt['epoch'] == 0 and ckpt['complete'] is False and ckpt['batch_idx'] < 4
    assert not (tmp_path / 'sig' / 'last.pth.tar').exists()
    assert not list((tmp_path / 'sig').glob('.*.tmp'))


def test_nan_loss_stops_with_the_last_good_checkpoint_intact(data_dir, tmp_path, monkeypatch):
    made = train.create_train_model
    calls = {'n': 0}

    def poisoned(*a, **k):
        model = made(*a, **k)

        def hook(module, inputs, output):
            if module.training:
                calls['n'] += 1
                if calls['n'] >= 2:  # the step of epoch 1
                    return output * float('inf')
            return output
        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(train.run, 'create_train_model', poisoned)
    with pytest.raises(UserError, match=r'loss is (nan|inf) at epoch 1.*last good checkpoint .*last.pth.tar is intact'):
        run_train('--data-dir', data_dir, *RUN_OPTS, '--epochs', 3, '--output', tmp_path, '--experiment', 'nan')
    ckpt = torch.load(tmp_path / 'nan' / 'last.pth.tar', map_location='cpu', weights_only=True)
    assert ckpt['epoch'] == 0
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values())
    assert len(summary_table(tmp_path / 'nan')) == 2


# ---------------------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------------------
def _validate(capsys, *argv):
    assert train.validate_main([str(a) for a in argv]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_validate_centre_crop_matches_training_evaluation(trained_run, data_dir, capsys):
    r = _validate(capsys, '--checkpoint', trained_run / 'last.pth.tar', '--data-dir', data_dir, '-j', 0)
    last = summary_rows(trained_run)[-1]
    assert r['crop'] == 'center' and r['images'] == 3
    assert r['top1'] == pytest.approx(float(last['eval_top1']), abs=1e-3)
    assert r['loss'] == pytest.approx(float(last['eval_loss']), rel=1e-4)
    st = _validate(capsys, '--checkpoint', trained_run / 'last.safetensors', '--data-dir', data_dir, '-j', 0)
    assert (st['top1'], st['loss']) == (r['top1'], r['loss'])


def test_validate_safetensors_of_an_avg_pool_run(data_dir, tmp_path, capsys):
    """The weights-only file carries the options that shape the model (global pool), not just the weights."""
    assert run_train('--data-dir', data_dir, *RUN_OPTS, '--epochs', 1, '--gp', 'avg', '--output', tmp_path,
                      '--experiment', 'gp') == 0
    r = _validate(capsys, '--checkpoint', tmp_path / 'gp' / 'last.pth.tar', '--data-dir', data_dir, '-j', 0)
    st = _validate(capsys, '--checkpoint', tmp_path / 'gp' / 'last.safetensors', '--data-dir', data_dir, '-j', 0)
    assert (st['top1'], st['loss']) == (r['top1'], r['loss'])


def test_validate_reads_checkpoints_from_elsewhere(trained_run, data_dir, tmp_path, capsys):
    """timm train.py's checkpoint (its arguments pickled as a Namespace, which weights_only=True allows), and a plain
    state_dict with --model: the same weights give the same figures. One of another model ends in one line."""
    import argparse
    ours = torch.load(trained_run / 'last.pth.tar', map_location='cpu', weights_only=True)
    ref = _validate(capsys, '--checkpoint', trained_run / 'last.pth.tar', '--data-dir', data_dir, '-j', 0)
    timm_args = argparse.Namespace(model='alexnet_split_2', num_classes=3, model_kwargs={'fc_width': 64}, gp=None,
                                   in_chans=None, input_size=None, img_size=64, crop_pct=None, mean=None, std=None,
                                   interpolation='')
    ema = {k: v * 0.5 if v.is_floating_point() else v for k, v in ours['state_dict'].items()}
    torch.save({'epoch': 1, 'arch': 'alexnet_split_2', 'args': timm_args, 'version': 2, 'metric': 50.0,
                'state_dict': {f'module.{k}': v for k, v in ours['state_dict'].items()}, 'state_dict_ema': ema},
               tmp_path / 'timm.pth.tar')
    torch.save(ours['state_dict'], tmp_path / 'plain.pth')
    got = _validate(capsys, '--checkpoint', tmp_path / 'timm.pth.tar', '--data-dir', data_dir, '-j', 0)
    assert (got['top1'], got['loss'], got['weights']) == (ref['top1'], ref['loss'], 'state_dict')
    got = _validate(capsys, '--checkpoint', tmp_path / 'timm.pth.tar', '--use-ema', '--data-dir', data_dir, '-j', 0)
    assert got['weights'] == 'state_dict_ema' and got['loss'] != ref['loss']
    run = _validate(capsys, '--checkpoint', trained_run, '--data-dir', data_dir, '-j', 0)  # a run folder: its best
    assert run['checkpoint'] == str(trained_run / 'model_best.pth.tar')
    plain = _validate(capsys, '--checkpoint', tmp_path / 'plain.pth', '--model', 'alexnet_split_2', '--img-size', 64,
                      '--data-dir', data_dir, '-j', 0)
    assert (plain['top1'], plain['loss'], plain['weights']) == (ref['top1'], ref['loss'], 'plain state_dict')

    assert cli.main(['validate', '--checkpoint', str(tmp_path / 'plain.pth'), '--data-dir', str(data_dir)]) == 2
    assert 'does not name its model' in capsys.readouterr().err
    assert cli.main(['validate', '--checkpoint', str(tmp_path / 'plain.pth'), '--model', 'alexnet_split_2',
                     '--use-ema', '--data-dir', str(data_dir)]) == 2
    assert 'holds no EMA weights' in capsys.readouterr().err
    assert cli.main(['validate', '--checkpoint', str(tmp_path / 'plain.pth'), '--model', 'alexnet_split_3',
                     '--data-dir', str(data_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'does not fit alexnet_split_3' in err[0]
    assert cli.main(['validate', '--checkpoint', str(tmp_path / 'plain.pth'), '--model', 'no_such_net',
                     '--data-dir', str(data_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'no_such_net' in err[0]


def test_validate_a_one_channel_model_from_a_plain_state_dict(tmp_path, capsys):
    """in_chans comes from conv1's shape, and the loader then gives one-channel images."""
    import timm
    gray = make_folder(tmp_path / 'gray', {'validation': 1})
    model = timm.create_model('alexnet_split_2', num_classes=3, in_chans=1, fc_width=64)
    torch.save(model.state_dict(), tmp_path / 'one.pth')
    r = _validate(capsys, '--checkpoint', tmp_path / 'one.pth', '--model', 'alexnet_split_2', '--img-size', 64,
                  '--data-dir', gray, '-j', 0)
    assert r['images'] == 3 and 0 <= r['top1'] <= 100


def test_validate_ten_crop_averages_the_softmax_of_ten_crops(trained_run, data_dir, capsys):
    r = _validate(capsys, '--checkpoint', trained_run / 'last.pth.tar', '--data-dir', data_dir, '-j', 0, '--ten-crop')
    assert r['crop'] == 'ten-crop' and r['images'] == 3
    ckpt = torch.load(trained_run / 'last.pth.tar', map_location='cpu', weights_only=True)
    import timm
    model = timm.create_model('alexnet_split_2', num_classes=3, **ckpt['args']['model_kwargs']).eval()
    model.load_state_dict(ckpt['state_dict'])
    dc = ckpt['data_config']
    tc = train.TenCrop(tuple(dc['input_size'][1:]), dc['crop_pct'], dc['interpolation'])
    mean = torch.tensor(dc['mean']).view(1, 3, 1, 1) * 255
    losses, correct = [], 0
    for label, name in enumerate(sorted(COLOURS)):
        crops = tc(Image.open(data_dir / 'validation' / name / '0.png').convert('RGB')).float() - mean
        with torch.no_grad():
            p = model(crops).softmax(-1).mean(0)
        losses.append(-math.log(p[label].item()))
        correct += int(p.argmax().item() == label)
    assert r['loss'] == pytest.approx(sum(losses) / 3, rel=1e-4)
    assert r['top1'] == pytest.approx(100 * correct / 3, abs=1e-3)


def test_ten_crop_geometry():
    w, h, size = 100, 80, 64
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    img = Image.fromarray(np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8))
    crops = train.TenCrop((size, size), crop_pct=size / h)(img)  # shorter side already 80: no resize
    assert crops.shape == (10, 3, size, size) and crops.dtype == torch.uint8
    origin = [(int(c[0, 0, 0]), int(c[1, 0, 0])) for c in crops]
    corners = [(0, 0), (w - size, 0), (0, h - size), (w - size, h - size), ((w - size) // 2, (h - size) // 2)]
    assert origin[:5] == corners
    # the other five: the same corners and centre of the mirrored image, i.e. the mirrors of the first five
    mirrored = [next(i for i in range(5) if torch.equal(m, crops[i].flip(-1))) for m in crops[5:]]
    assert sorted(mirrored) == [0, 1, 2, 3, 4]


def test_paper_crop_is_a_random_crop_of_the_centre_square():
    w, h, size = 120, 80, 64
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    img = Image.fromarray(np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8))
    crop = train.PaperCrop((size, size), crop_pct=size / h)  # shorter side 80 = size / crop_pct: no resize
    origins = set()
    for _ in range(40):
        a = np.asarray(crop(img))
        assert a.shape == (size, size, 3)
        x0, y0 = int(a[0, 0, 0]), int(a[0, 0, 1])
        assert (w - h) // 2 <= x0 <= (w - h) // 2 + h - size and 0 <= y0 <= h - size
        assert np.array_equal(a[:, :, 0], x0 + np.tile(np.arange(size), (size, 1)))
        origins.add((x0, y0))
    assert len(origins) > 5


@pytest.mark.parametrize('size, crop_pct, shapes', [
    ((224, 224), 0.875, [(256, 256), (256, 341), (383, 256), (256, 257)]),  # odd offsets: CenterCrop's rounding
    ((30, 20), 0.9, [(33, 40), (51, 33)]),  # a non-square crop of the square
    ((32, 32), 1.0, [(32, 47)]),  # the crop is the whole square: no draw
])
def test_paper_crop_on_an_array_draws_and_crops_as_torchvisions_transforms(size, crop_pct, shapes):
    """PaperCrop's own slicing of an array at the scale: the pixels and the random stream of torchvision's
    CenterCrop + RandomCrop on the same view."""
    crop = train.PaperCrop(size, crop_pct)
    rng = np.random.default_rng(0)
    for shape in shapes:
        img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        for seed in range(20):
            torch.manual_seed(seed)
            got = crop(img)
            after = torch.rand(1)
            torch.manual_seed(seed)
            want = crop.crop(crop.square(torch.from_numpy(img).permute(2, 0, 1)))
            assert torch.equal(got, want) and torch.equal(after, torch.rand(1)), (shape, seed)


def test_loader_gives_0_255_pixels_minus_the_mean_pixel(tmp_path):
    import timm
    from timm.data import resolve_data_config
    rgb = np.array([200, 100, 50])
    d = tmp_path / 'solid' / 'validation' / 'only'
    d.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.broadcast_to(rgb, (70, 90, 3)).astype(np.uint8)).save(d / f'{i}.png')
    model = timm.create_model('alexnet_split_2', num_classes=1)
    dc = resolve_data_config({'img_size': 64}, model=model)
    expected = torch.tensor(rgb - np.array(dc['mean']) * 255, dtype=torch.float32).view(1, 3, 1, 1)
    args = train.parse_args(['--data-dir', str(tmp_path / 'solid'), '--train-split', 'validation', '--no-aug',
                             '-b', '2', '--workers', '0'])
    args.distributed, args.prefetcher = False, True
    ds = train.data.create_split_dataset(args, 'validation', False, None, 'validation')
    for prefetcher in (True, False):
        loader = train.loaders.eval_loader(ds, dc, 2, 0, torch.device('cpu'), prefetcher=prefetcher)
        x, _ = next(iter(loader))
        torch.testing.assert_close(x, expected.expand_as(x), atol=1e-3, rtol=0)
    train_loader, _ = train.loaders.build_loaders(args, dc, torch.device('cpu'), ds, None, torch.float32)
    x, _ = next(iter(train_loader))
    torch.testing.assert_close(x, expected.expand_as(x), atol=1e-3, rtol=0)


def test_pca_lighting_adds_one_offset_per_image_in_0_255_units():
    args = train.parse_args(['--pca-lighting', '0.1'])
    pca = train.parts.build_pca(args, {'std': (1 / 255,) * 3})  # the split AlexNet's std: pixels stay on 0-255
    torch.manual_seed(0)
    out = pca(torch.zeros(512, 3, 4, 4))
    per_image = out[:, :, 0, 0]
    assert torch.equal(out, per_image[:, :, None, None].expand_as(out))
    # along the first ImageNet eigenvector the offsets have std 0.1 * 0.2175 (0-1 units) = 5.5 on the 0-255 scale
    from timm_alexnet_split.augment import IMAGENET_EIGVEC
    along = per_image.double() @ torch.tensor(IMAGENET_EIGVEC[0], dtype=torch.float64)
    assert along.std().item() == pytest.approx(0.1 * 0.2175 * 255, rel=0.15)


# ---------------------------------------------------------------------------------------------------------------------
# the plateau schedule
# ---------------------------------------------------------------------------------------------------------------------
def _optimizer(lr=0.01):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


def _lr(opt):
    return opt.param_groups[0]['lr']


def test_plateau_decays_after_patience_epochs_at_most_k_times():
    opt = _optimizer()
    sched = PlateauDecay(opt, patience=2, max_decays=2, decay_rate=0.1, mode='max')
    metrics = [50, 60, 60, 55, 70, 70, 70, 69, 69, 69, 69, 69]
    lrs = []
    for epoch, m in enumerate(metrics):
        sched.step(epoch + 1, m)
        lrs.append(_lr(opt))
    # no improvement at epochs 2, 3 -> decay; improvement at 4; none at 5, 6 -> decay; then the limit holds
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4])
    assert sched.num_decays == 2 and sched.decay_epochs == [4, 7]


def test_plateau_min_mode_warmup_and_missing_metrics():
    opt = _optimizer()
    sched = PlateauDecay(opt, patience=1, mode='min', warmup_t=2, warmup_lr_init=0.0)
    assert _lr(opt) == 0.0
    sched.step(1, 5.0)
    assert _lr(opt) == pytest.approx(0.005)  # warm-up: metrics not counted
    sched.step(2, 5.0)
    assert _lr(opt) == pytest.approx(0.01) and sched.num_decays == 0
    sched.step(3, 1.0)
    sched.step(4, None)  # no measurement: rate kept, nothing counted
    assert _lr(opt) == pytest.approx(0.01)
    sched.step(5, 2.0)  # worse loss
    assert _lr(opt) == pytest.approx(0.001)


def test_plateau_state_dict_round_trip_continues_identically():
    metrics = [10, 9, 9, 12, 11, 11, 11, 10, 13, 13, 13]
    ref_opt = _optimizer()
    ref = PlateauDecay(ref_opt, patience=2, max_decays=3)
    for e, m in enumerate(metrics):
        ref.step(e + 1, m)
    opt_a = _optimizer()
    a = PlateauDecay(opt_a, patience=2, max_decays=3)
    for e, m in enumerate(metrics[:5]):
        a.step(e + 1, m)
    saved = torch.load(_roundtrip(a.state_dict()), weights_only=True)
    opt_b = _optimizer()
    b = PlateauDecay(opt_b, patience=5, max_decays=0)  # other settings: the state carries them
    b.load_state_dict(saved)
    b.step(5)
    assert _lr(opt_b) == _lr(opt_a)
    for e, m in enumerate(metrics[5:], start=5):
        b.step(e + 1, m)
    assert _lr(opt_b) == pytest.approx(_lr(ref_opt)) and b.num_decays == ref.num_decays


def _roundtrip(obj):
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


# ---------------------------------------------------------------------------------------------------------------------
# options, config files, refusals
# ---------------------------------------------------------------------------------------------------------------------
def test_config_file_then_command_line(tmp_path):
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('lr: 0.5\nepochs: 7\nmodel_kwargs: {init: caffe}\nweight_decay: 5e-4\nplateau_metric: val_loss\n')
    args = train.parse_args(['-c', str(cfg), '--lr', '0.25'])
    assert args.lr == 0.25 and args.epochs == 7 and args.model_kwargs == {'init': 'caffe'}
    assert args.weight_decay == 0.0005  # YAML reads 5e-4 as a string: converted as the command line would
    assert args.plateau_metric == 'val_loss'
    assert args.batch_size == 128 and args.sched == 'cosine'  # timm train.py's defaults
    assert train.parse_args(['--config', str(cfg), '--epochs', '3']).epochs == 3


def test_resume_takes_the_checkpoints_options_then_config_then_cli(tmp_path):
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('epochs: 9\n')
    ck = {'lr': 0.3, 'epochs': 4, 'batch_size': 16, 'device': 'cuda:3', 'pca_lighting': 0.1}
    args = train.parse_args(['--config', str(cfg), '--batch-size', '8'], resume_args=ck)
    assert (args.lr, args.epochs, args.batch_size, args.pca_lighting) == (0.3, 9, 8, 0.1)
    assert args.device is None  # the machine is not inherited


@pytest.mark.parametrize('argv, config, match', [
    (['--mixup', '0.2'], None, 'not supported.*mixup'),
    (['--model-ema'], None, 'not supported.*EMA'),
    (['--no-such-option', '1'], None, 'unknown option --no-such-option'),
    ([], {'mixup': 0.2}, 'mixup = 0.2 is not supported'),
    ([], {'weight_decy': 0.1}, "unknown option 'weight_decy' .*did you mean weight_decay"),
    ([], {'lr': 'fast'}, 'lr: expected float'),
    ([], {'epochs': 2.5}, 'epochs: expected int'),
    ([], {'scale': 0.5, 'input_size': [3, 64]}, 'input_size: expected 3 values'),
    ([], {'paper_crop': 'yes'}, 'paper_crop: expected true or false'),
    ([], {'plateau_metric': 'val_top5'}, 'plateau_metric: expected one of'),
    ([], ['lr', 0.1], 'must be a mapping'),
])
def test_refuses_unknown_unsupported_and_ill_typed_options(tmp_path, argv, config, match):
    if config is not None:
        (tmp_path / 'c.yaml').write_text(yaml.safe_dump(config))
        argv = ['--config', str(tmp_path / 'c.yaml'), *argv]
    with pytest.raises(UserError, match=match):
        train.parse_args(argv)


def test_unsupported_option_at_its_off_value_is_accepted_in_a_config(tmp_path):
    (tmp_path / 'c.yaml').write_text('mixup: 0.0\nmodel_ema: false\nwandb_tags: []\n')
    train.parse_args(['--config', str(tmp_path / 'c.yaml')])


@pytest.mark.parametrize('argv, match', [
    (['--model-parallel', 'none', 'cpu'], 'none cannot be combined'),
    (['--dist-timeout', '0'], '--dist-timeout must be > 0'),
    (['--plateau-metric', 'train_top1'], 'needs --sched plateau'),
    (['--sched', 'plateau', '--val-split', ''], 'validation metric but --val-split is empty'),
    (['--paper-crop', '--scale', '0.5', '1'], 'replaces timm.s random-resized crop'),
    (['--pca-eig', 'eig.json'], 'no effect without --pca-lighting'),
    (['--epochs', '0'], '--epochs must be >= 1'),
])
def test_refuses_combinations_that_would_be_ignored(argv, match):
    args = train.parse_args(argv)
    args.distributed = False
    with pytest.raises(UserError, match=match):
        train.options.check_args(args)


def test_model_parallel_none_is_accepted():
    args = train.parse_args(['--model-parallel', 'none'])
    args.distributed = False
    train.options.check_args(args)


def test_bad_input_ends_in_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('lr: [0.1\n')
    assert cli.main(['train', '--config', str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'not valid YAML' in err[0]
    assert cli.main(['train', '--config', str(tmp_path / 'missing.yaml')]) == 2
    assert cli.main(['validate', '--checkpoint', str(tmp_path / 'none.pth.tar'), '--data-dir', str(tmp_path)]) == 2
    garbage = tmp_path / 'garbage.pth.tar'
    garbage.write_bytes(b'not a checkpoint')
    assert cli.main(['validate', '--checkpoint', str(garbage), '--data-dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and 'not a readable PyTorch checkpoint' in err[-1] and 'does not exist' in err[-2]


def test_missing_data_folder_from_the_command_line(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'timm_alexnet_split.train', '--data-dir', str(tmp_path / 'nope'),
                        '--device', 'cpu', '--output', str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f'timm-alexnet-split train: error: data folder {tmp_path / "nope"} not found']
    assert not any(tmp_path.glob('*/args.yaml')), 'nothing written for a run that never started'


def test_demo_data_option_trains_on_ensure_demo_data(tmp_path, monkeypatch):
    import types
    folder = make_folder(tmp_path / 'demo', {'train': 1, 'validation': 1})
    fake = types.ModuleType('timm_alexnet_split.data')
    fake.ensure_demo_data = lambda root=None: folder
    monkeypatch.setitem(sys.modules, 'timm_alexnet_split.data', fake)
    args = train.parse_args(['--demo-data'])
    train_ds, eval_ds, names = train.data.build_datasets(args)
    assert args.data_dir == str(folder) and names == sorted(COLOURS)
    assert len(train_ds) == 3 and len(eval_ds) == 3


# ---------------------------------------------------------------------------------------------------------------------
# run folder and checkpoint safety
# ---------------------------------------------------------------------------------------------------------------------
def test_a_new_run_never_writes_into_an_existing_run(tmp_path):
    (tmp_path / 'exp').mkdir()
    assert train.rundir.new_run_dir(tmp_path, 'exp') == tmp_path / 'exp'  # empty: used
    (tmp_path / 'exp' / 'summary.csv').write_text('x')
    assert train.rundir.new_run_dir(tmp_path, 'exp') == tmp_path / 'exp-1'
    (tmp_path / 'exp-1' / 'last.pth.tar').write_text('x')
    assert train.rundir.new_run_dir(tmp_path, 'exp') == tmp_path / 'exp-2'
    assert (tmp_path / 'exp' / 'summary.csv').read_text() == 'x'


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / 'last.pth.tar'
    train.checkpoints.atomic_torch_save({'epoch': 1}, path)
    real_save = torch.save

    def dies_half_way(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        Path(f).write_bytes(Path(f).read_bytes()[:10])
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', dies_half_way)
    with pytest.raises(UserError, match='cannot write .*last.pth.tar: disk full'):
        train.checkpoints.atomic_torch_save({'epoch': 2}, path)
    assert torch.load(path, weights_only=True) == {'epoch': 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last.pth.tar']


def test_run_saver_keeps_best_and_history(tmp_path):
    saver = train.RunSaver(tmp_path, decreasing=False, max_history=2, safetensors=True)
    w = {'w': torch.zeros(2)}
    for epoch, metric in enumerate([50.0, 40.0, 70.0, 60.0]):
        w = {'w': torch.full((2,), float(epoch))}
        saver.save(epoch, metric, {'epoch': epoch}, w, {'epoch': str(epoch)})
    assert torch.load(tmp_path / 'model_best.pth.tar', weights_only=True)['epoch'] == 2
    assert torch.load(tmp_path / 'last.pth.tar', weights_only=True)['epoch'] == 3
    assert sorted(p.name for p in tmp_path.glob('checkpoint-*')) == ['checkpoint-2.pth.tar', 'checkpoint-3.pth.tar']
    from safetensors.torch import load_file
    assert load_file(str(tmp_path / 'model_best.safetensors'))['w'].tolist() == [2.0, 2.0]
    assert load_file(str(tmp_path / 'last.safetensors'))['w'].tolist() == [3.0, 3.0]
    restored = train.RunSaver(tmp_path, max_history=2)
    restored.load_state_dict(torch.load(tmp_path / 'last.pth.tar', weights_only=True)['saver'])
    assert (restored.best_metric, restored.best_epoch) == (70.0, 2)


def test_skip_unreadable_substitutes_for_training_and_drops_for_evaluation(tmp_path):
    class Flaky(torch.utils.data.Dataset):
        samples = [(f'/x/{i}.png', 0) for i in range(4)]

        def __len__(self):
            return 4

        def __getitem__(self, i):
            if i == 1:
                raise OSError('truncated')
            return torch.full((3, 2, 2), i, dtype=torch.uint8), 0

    log = tmp_path / 'skipped.txt'
    ds = train.SkipUnreadable(Flaky(), 'train', str(log))
    assert int(ds[1][0][0, 0, 0]) == 2
    ev = train.SkipUnreadable(Flaky(), 'validation', str(log), substitute=False)
    assert ev[1] is None
    collate = train.data.SkipNoneCollate(torch.utils.data.default_collate, (3, 2, 2))
    x, y = collate([ev[i] for i in range(4)])
    assert x.shape[0] == 3
    assert collate([None, None])[0].shape == (0, 3, 2, 2)
    assert train.data.skip_counts(log) == (3, 1)  # three failed reads of one file


def test_initial_checkpoint_and_pretrained_path_are_read_or_refused_in_one_line(trained_run, data_dir, tmp_path):
    """--initial-checkpoint loads the weights as timm's checkpoint_path would (the run starts from them); a text
    file, a truncated file or another model's weights, as the checkpoint or as --pretrained-path, is one short line
    before any run folder; --pretrained-path without --pretrained is refused, not ignored."""
    from timm_alexnet_split.checkpoint import load_checkpoint_file
    best = load_checkpoint_file(trained_run / 'last.pth.tar')[0]
    model = train.devices.create_train_model(train.parse_args(['--data-dir', str(data_dir), *RUN_OPTS,
                                                               '--num-classes', '3', '--initial-checkpoint',
                                                               str(trained_run / 'last.pth.tar')]),
                                             torch.device('cpu'))
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    text = tmp_path / 'text.safetensors'
    text.write_text('not weights')
    cut = tmp_path / 'cut.pth.tar'
    cut.write_bytes((trained_run / 'last.pth.tar').read_bytes()[:5000])
    cases = [(['--initial-checkpoint', text], 'not a readable safetensors file'),
             (['--initial-checkpoint', cut], 'not a readable PyTorch checkpoint'),
             (['--initial-checkpoint', trained_run / 'last.pth.tar', '--model-kwargs', 'fc_width=32'],
              'does not fit alexnet_split_2'),
             (['--pretrained', '--pretrained-path', text], 'not a readable safetensors file'),
             (['--pretrained-path', trained_run / 'last.pth.tar'], 'is read only with --pretrained')]
    for extra, says in cases:
        with pytest.raises(UserError, match=re.escape(says)) as e:
            run_train('--data-dir', data_dir, *RUN_OPTS, '--epochs', 1, '--output', tmp_path, '--experiment', 'x',
                      *extra)
        assert '\n' not in str(e.value) and len(str(e.value)) < 400, str(e.value)
    assert not (tmp_path / 'x').exists()
