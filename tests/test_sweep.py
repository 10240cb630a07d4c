"""The sweep command: 2 tower counts x 2 seeds at fc_width 64, one epoch on a tiny drawn ImageFolder; every output,
the reuse of complete runs, the resume of an interrupted one, and one-line refusals of bad input."""
import csv
import json
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from timm_alexnet_split import cli, sweep

RECIPE = dict(model='alexnet_split_2', model_kwargs={'init': 'caffe', 'fc_width': 64}, img_size=64, crop_pct=1.0,
              batch_size=8, opt='momentum', lr=0.01, weight_decay=0.0005, sched='cosine', warmup_epochs=0, epochs=1,
              smoothing=0.0, hflip=0.0, color_jitter=0.0, train_interpolation='bilinear', workers=0, log_interval=50,
              checkpoint_hist=1)


def _draw_folder(root):
    """Two classes of 64 px images: red-ish smooth vs grey stripes, 8 train and 4 validation images each."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:64, :64]
    for split, n in (('train', 8), ('validation', 4)):
        for cls in ('colour', 'stripes'):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                if cls == 'colour':
                    img = np.stack([np.full((64, 64), 180 + 20 * i % 60), np.full((64, 64), 60), np.full((64, 64), 90)], -1)
                else:
                    img = np.repeat((128 + 100 * np.sin(x / (2 + i % 3)))[..., None], 3, -1)
                img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f'{i}.png')


@pytest.fixture(scope='module')
def swept(module_tmp):
    """One sweep (towers 1 2, seeds 2) and the command that made it."""
    data = module_tmp / 'data'
    _draw_folder(data)
    recipe = module_tmp / 'tiny.yaml'
    recipe.write_text(yaml.safe_dump(RECIPE))
    out = module_tmp / 'sweep'
    argv = ['sweep', '--recipe', str(recipe), '--towers', '1', '2', '--seeds', '2', '--out', str(out),
            '--', '--data-dir', str(data)]
    assert cli.main(argv) == 0
    return out, argv


def test_every_run_is_trained_in_its_folder_with_its_towers_and_seed(swept):
    out, _ = swept
    for n in (1, 2):
        for s in (0, 1):
            run = out / f'towers{n}-seed{s}'
            args = yaml.safe_load((run / 'args.yaml').read_text())
            assert args['seed'] == s
            assert args['model_kwargs'] == {'init': 'caffe', 'fc_width': 64, 'num_towers': n}
            assert (run / 'model_best.safetensors').is_file() and (run / 'kernels' / 'report.json').is_file()
            assert not list(run.glob('*.pth.tar')) and not (run / 'last.safetensors').exists()  # dropped by default
            assert (run / 'conv1' / 'epoch_0000.npy').is_file() and (run / 'summary.csv').is_file()


def test_sweep_json_has_the_runs_and_summary_the_issue_lists(swept):
    out, _ = swept
    doc = json.loads((out / 'sweep.json').read_text())
    runs = doc['runs']
    assert [(r['towers'], r['seed']) for r in runs] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for r in runs:
        for key in ('run', 'val_top1', 'chromatic_fraction', 'frequency', 'p_value', 'frequency_p_value', 'effect_size',
                    'frequency_effect_size', 'verdict', 'conv1_from_random'):
            assert key in r, key
        assert len(r['chromatic_fraction']) == r['towers'] and 0 <= r['val_top1'] <= 100
        assert 0 < r['conv1_from_random']['relative_change']  # W0 from conv1/epoch_0000.npy
    one, two = runs[0], runs[2]
    assert one['latent']['applicable'] and one['latent']['summary'] and one['p_value'] is None
    assert two['latent'] is None and 0 <= two['effect_size'] <= 1 and 0 <= two['p_value'] <= 1
    assert 0 <= two['init']['p_value'] <= 1 and one['init'] is None  # the same tests on conv1/epoch_0000.npy
    s1, s2 = doc['summary']
    assert (s1['towers'], s1['runs'], s2['towers'], s2['runs']) == (1, 2, 2, 2) and 0 <= s2['split_at_init_runs'] <= 2
    assert s2['split_runs'] == sum(1 for r in runs[2:] if min(r['p_value'], r['frequency_p_value'] or 1) < doc['alpha'])
    for axis in ('colour', 'frequency'):
        e, c = s2[axis]['effect_size'], s2[axis]['control']
        assert e['low'] <= e['mean'] <= e['high'] and e['n'] == 2
        assert c['partitions'] >= 1000 and c['one_tower_runs'] == 2 and 0 <= c['low'] <= c['mean'] <= c['high'] <= 1


def test_the_greyest_towers_start_is_read_from_the_initial_kernels(swept):
    from timm_alexnet_split.kernels.measures import chromatic_measures
    out, _ = swept
    doc = json.loads((out / 'sweep.json').read_text())
    for r in doc['runs'][2:]:
        w0 = np.load(out / r['run'] / 'conv1' / 'epoch_0000.npy')
        start = [float(np.mean(chromatic_measures(w0[i * 48:(i + 1) * 48], None)[r['measure']])) for i in (0, 1)]
        assert r['init_chromatic_fraction'] == pytest.approx(start)
        greyest = int(np.argmin(r['chromatic_fraction']))
        assert r['greyest_tower_start_rank'] == (1 if start[greyest] >= max(start) else 2)
    assert 'greyest_tower_start_rank' not in doc['runs'][0]  # one tower: nothing to rank
    ranks = doc['summary'][1]['greyest_tower_start_ranks']
    assert set(ranks) == {'1', '2'} and sum(ranks.values()) == 2


def test_start_order_ranks_the_greyest_tower_and_gives_no_rank_it_cannot_give(tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.normal(size=(48, 3, 11, 11))
    grey = np.repeat(rng.normal(size=(48, 1, 11, 11)), 3, axis=1)  # chromatic fraction 0 on every measure
    run = tmp_path / 'towers2-seed0'
    (run / 'conv1').mkdir(parents=True)
    np.save(run / 'conv1' / 'epoch_0000.npy', np.concatenate([colour, grey]))
    a = {'kernels_per_tower': [48, 48], 'measure': 'band', 'chromatic_fraction': [0.2, 0.8]}
    got = sweep.start_order(run, a)
    assert got['init_chromatic_fraction'][0] > 0.5 and got['init_chromatic_fraction'][1] == pytest.approx(0, abs=1e-9)
    assert got['greyest_tower_start_rank'] == 1  # the tower that started colourful ended greyest
    assert sweep.start_order(run, {**a, 'chromatic_fraction': [0.8, 0.2]})['greyest_tower_start_rank'] == 2
    assert sweep.start_order(run, {**a, 'chromatic_fraction': [0.5, 0.5]}) == {}  # a tie: no greyest tower
    assert sweep.start_order(run, {**a, 'chromatic_fraction': [None, 0.5]}) == {}
    assert sweep.start_order(run, {**a, 'kernels_per_tower': [96]}) == {}
    np.save(run / 'conv1' / 'epoch_0000.npy', np.concatenate([colour, np.zeros_like(grey)]))  # a dead tower: NaN
    assert sweep.start_order(run, a) == {}
    (run / 'conv1' / 'epoch_0000.npy').unlink()
    assert sweep.start_order(run, a) == {}


def test_eta_squared_is_recomputable_from_the_kernel_reports(swept):
    out, _ = swept
    run = json.loads((out / 'sweep.json').read_text())['runs'][2]
    report = json.loads((out / run['run'] / 'kernels' / 'report.json').read_text())
    cf = [np.asarray(g['chromatic_fraction'], float) for g in report['groups']]
    pooled = np.concatenate(cf)
    between = sum(len(g) * (g.mean() - pooled.mean()) ** 2 for g in cf)
    assert run['effect_size'] == pytest.approx(between / np.square(pooled - pooled.mean()).sum())


def test_csv_has_one_row_per_run_and_the_figure_is_drawn(swept):
    out, _ = swept
    rows = list(csv.DictReader(open(out / 'sweep.csv', newline='')))
    assert [r['run'] for r in rows] == ['towers1-seed0', 'towers1-seed1', 'towers2-seed0', 'towers2-seed1']
    assert rows[2]['split'] in ('yes', 'no') and float(rows[2]['effect_size']) >= 0 and rows[0]['latent']
    assert (out / 'sweep.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_the_same_command_again_trains_nothing_and_redraws(swept, monkeypatch, capsys):
    out, argv = swept
    from timm_alexnet_split import train

    def no_training(argv):
        raise AssertionError('a complete run was trained again')
    monkeypatch.setattr(train, 'main', no_training)
    weights = out / 'towers2-seed0' / 'model_best.safetensors'
    before = weights.stat().st_mtime_ns
    os.remove(out / 'sweep.png')
    assert cli.main(argv) == 0
    assert weights.stat().st_mtime_ns == before and (out / 'sweep.png').is_file()
    text = capsys.readouterr().out
    assert 'run 4 of 4: towers2-seed1 (complete)' in text and '2 towers: ' in text


def test_an_interrupted_run_is_resumed_and_a_stale_one_kept_aside(tmp_path, monkeypatch):
    from timm_alexnet_split import train
    seen = []

    def fake_main(argv):
        seen.append(argv)
        return 0
    monkeypatch.setattr(train, 'main', fake_main)
    run = tmp_path / 'towers2-seed0'
    run.mkdir()
    (run / 'args.yaml').write_text('epochs: 3\n')
    (run / 'last.pth.tar').write_bytes(b'x')
    with pytest.raises(sweep.UserError, match='without a complete run'):
        sweep.train_run(tmp_path, run.name, ['--config', 'r.yaml'])
    assert seen[-1][-2:] == ['--resume', str(run / 'last.pth.tar')]
    (run / 'last.pth.tar').unlink()
    with pytest.raises(sweep.UserError):
        sweep.train_run(tmp_path, run.name, ['--config', 'r.yaml'])
    assert '--resume' not in seen[-1] and (tmp_path / 'towers2-seed0.stopped-1' / 'args.yaml').is_file()


def _complete_run(root, name='towers2-seed0'):
    run = root / name
    (run / 'conv1').mkdir(parents=True)
    (run / 'args.yaml').write_text('epochs: 1\n')
    (run / 'summary.csv').write_text('epoch,train_loss\n0,1.0\n')
    for f in ('last.pth.tar', 'model_best.pth.tar', 'checkpoint-0.pth.tar', 'last.safetensors',
              'model_best.safetensors'):
        (run / f).write_bytes(b'x' * 10)
    return run


def test_a_finished_run_keeps_its_best_weights_and_drops_its_training_checkpoints(tmp_path):
    run = _complete_run(tmp_path)
    assert sweep.drop_checkpoints(run) == 40
    assert sorted(p.name for p in run.iterdir()) == ['args.yaml', 'conv1', 'model_best.safetensors', 'summary.csv']
    assert sweep.run_state(run) == 'complete'
    unfinished = _complete_run(tmp_path, 'towers2-seed1')
    (unfinished / 'args.yaml').write_text('epochs: 2\n')  # one of two epochs: resumable, keeps everything
    no_best = _complete_run(tmp_path, 'towers2-seed2')
    (no_best / 'model_best.safetensors').unlink()
    for kept in (unfinished, no_best):
        before = sorted(kept.iterdir())
        assert sweep.drop_checkpoints(kept) == 0 and sorted(kept.iterdir()) == before


@pytest.mark.parametrize('keep', [False, True])
def test_keep_checkpoints_leaves_the_runs_it_trains_whole(tmp_path, monkeypatch, keep):
    recipe = tmp_path / 'r.yaml'
    recipe.write_text(yaml.safe_dump(RECIPE))
    dropped = []
    monkeypatch.setattr(sweep, 'train_run', lambda out, name, argv: None)
    monkeypatch.setattr(sweep, '_record_wall', lambda run, seconds: None)
    monkeypatch.setattr(sweep, 'drop_checkpoints', lambda run: dropped.append(run.name))
    argv = ['--recipe', str(recipe), '--towers', '2', '--seeds', '1', '--out', str(tmp_path / 'out')]
    with pytest.raises(sweep.UserError, match='no complete run'):
        sweep.main(argv + (['--keep-checkpoints'] if keep else []))
    assert dropped == ([] if keep else ['towers2-seed0'])


@pytest.mark.parametrize('extra, message', [
    (['--towers', '0', '2'], '--towers must be from 1 to 96'),
    (['--seeds', '0'], '--seeds must be >= 1'),
    (['--partitions', '10'], '--partitions must be at least 1000'),
    (['--', '--seed', '3'], 'the sweep sets --seed'),
])
def test_bad_options_end_in_one_line(tmp_path, capsys, extra, message):
    recipe = tmp_path / 'r.yaml'
    recipe.write_text(yaml.safe_dump(RECIPE))
    assert cli.main(['sweep', '--recipe', str(recipe), '--out', str(tmp_path / 'o'), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / 'o').exists()


def test_missing_recipe_and_foreign_folder_are_refused_untouched(tmp_path, capsys):
    assert cli.main(['sweep', '--recipe', str(tmp_path / 'none.yaml'), '--out', str(tmp_path / 'o')]) == 2
    assert 'not found' in capsys.readouterr().err
    recipe = tmp_path / 'r.yaml'
    recipe.write_text(yaml.safe_dump(RECIPE))
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'notes.txt').write_text('keep')
    assert cli.main(['sweep', '--recipe', str(recipe), '--out', str(mine)]) == 2
    assert 'did not write' in capsys.readouterr().err and os.listdir(mine) == ['notes.txt']


def test_a_sweep_folder_refuses_other_train_options(swept, capsys):
    out, argv = swept
    assert cli.main([*argv, '--epochs', '2']) == 2
    assert 'different train options' in capsys.readouterr().err


def test_first_seed_trains_only_its_seeds_so_processes_can_share_a_folder(tmp_path, monkeypatch, capsys):
    from timm_alexnet_split import train
    seen = []

    def fake_main(argv):
        seen.append((argv[argv.index('--experiment') + 1], argv[argv.index('--seed') + 1]))
        return 0
    monkeypatch.setattr(train, 'main', fake_main)
    recipe = tmp_path / 'r.yaml'
    recipe.write_text(yaml.safe_dump(RECIPE))
    argv = ['sweep', '--recipe', str(recipe), '--towers', '1', '2', '--first-seed', '2', '--seeds', '1',
            '--out', str(tmp_path / 'o')]
    assert cli.main(argv) == 2  # the fake trainer leaves no complete run: said in one line after the first
    assert seen == [('towers1-seed2', '2')]
    assert 'towers1-seed2 ended without a complete run' in capsys.readouterr().err
    assert cli.main([*argv[:-2], '--first-seed', '-1', '--out', str(tmp_path / 'p')]) == 2
    assert '--first-seed must be >= 0' in capsys.readouterr().err


def test_factor_accuracy_script_agrees_with_the_trainers_validation_top1(swept, capsys):
    """scripts/factor_accuracy.py (docs/science.md's per-cue accuracies) evaluates as the trainer does."""
    from scripthelp import script_module
    script = script_module('factor_accuracy')
    out, _ = swept
    run = out / 'towers2-seed1'
    data = out.parent / 'data'
    model, info = script.load_run(run)
    acc = script.factor_accuracy(model, info, data, 'validation')
    best = max(float(r['eval_top1']) for r in csv.DictReader(open(run / 'summary.csv')))
    assert acc['top-1'][0] * 100 == pytest.approx(best) and acc['top-1'][1] == 0.5
    assert acc['factor 1'] == acc['top-1']  # one factor per class name here: the class itself
    assert script.main([str(out / 'nothing')]) == 2
    assert 'not a training run folder' in capsys.readouterr().err


def _planted_run(towers, seed, top1, effect, rank=None):
    """A measured run as main() assembles it, with a planted top-1, colour effect size and start rank."""
    far = {'chromatic': {'mean': 0.6, 'below_0_3': 0.1}, 'chromatic_lowpass': {'mean': 0.6},
           'low_frequency_share': {'mean': 0.5}, 'relative_change': 1.2}
    r = {'towers': towers, 'seed': seed, 'run': f'towers{towers}-seed{seed}', 'val_top1': top1, 'train_seconds': 1.0,
         'measure': 'band', 'measure_label': 'own band', 'chromatic_fraction': [0.6] * towers,
         'frequency': [0.2] * towers, 'p_value': None if towers == 1 else 0.5, 'frequency_p_value': None,
         'effect_size': None if towers == 1 else effect, 'frequency_effect_size': None, 'verdict': '', 'latent': None,
         'init': None, 'conv1_from_random': far}
    if rank is not None:
        r['greyest_tower_start_rank'] = rank
    return r


def _planted_sweep():
    """Three towers: 10 runs, 7 learned (top-1 >= 90), 5 of them beyond the control (top 0.1) and 2 of the 3 that did
    not learn; rank 1 in 4 of the 7 learned; four towers: 2 runs, neither learned."""
    ctrl = {3: {'colour': {'mean': 0.02, 'low': 0.0, 'high': 0.1}, 'frequency': None},
            4: {'colour': {'mean': 0.03, 'low': 0.0, 'high': 0.1}, 'frequency': None}}
    learned = [(0.3, 1), (0.3, 1), (0.3, 1), (0.3, 1), (0.2, 2), (0.05, 3), (0.05, 2)]
    runs = [_planted_run(1, s, 99.0, None) for s in range(2)]
    runs += [_planted_run(3, s, 99.0, e, k) for s, (e, k) in enumerate(learned)]
    runs += [_planted_run(3, 7 + s, 40.0, e, 1) for s, e in enumerate((0.3, 0.3, 0.05))]
    runs += [_planted_run(4, s, 30.0, 0.2, 1) for s in range(2)]
    sweep.mark_runs(runs, ctrl, 90.0)
    return runs, ctrl, sweep.summarise(runs, [1, 3, 4], ctrl, 0.05)


def test_split_rate_counts_planted_outcomes_with_their_intervals(tmp_path, capsys):
    from timm_alexnet_split.proportions import binomial_tail, clopper_pearson, wilson
    runs, _, summary = _planted_sweep()
    three, four = summary[1]['split_rate'], summary[2]['split_rate']
    assert (three['all']['x'], three['all']['n'], three['learned']['x'], three['learned']['n']) == (7, 10, 5, 7)
    assert summary[1]['learned_runs']['x'] == 7 and summary[1]['learned_runs']['n'] == 10
    assert three['learned']['wilson'] == pytest.approx(wilson(5, 7))
    assert three['all']['wilson'][0] == pytest.approx(0.3968, abs=1e-4)  # 7 of 10 by hand
    assert three['all']['clopper_pearson'] == pytest.approx(clopper_pearson(7, 10))
    t = three['start_order_test']  # the learned runs only: rank 1 in 4 of 7, H0 1/3
    assert (t['rank1'], t['n']) == (4, 7) and t['p_value'] == pytest.approx(binomial_tail(4, 7, 1 / 3))
    assert four['all']['x'] == 2 and four['learned']['n'] == 0 and four['learned']['estimate'] is None
    assert four['start_order_test']['p_value'] is None

    out = tmp_path / 'sweep'
    out.mkdir()
    sweep.write_outputs(out, {'recipe': 'r.yaml', 'train_options': []}, runs, summary, 0.05, [], 90.0)
    doc = json.loads((out / 'sweep.json').read_text())
    assert doc['learned_top1'] == 90.0 and '90' in doc['learned_rule'] and doc['split_rule'] == sweep.SPLIT_RULE
    assert doc['summary'][1]['split_rate']['learned']['x'] == 5
    rows = list(csv.DictReader(open(out / 'sweep_rates.csv', newline='')))
    learned3 = next(r for r in rows if r['towers'] == '3' and r['population'] == 'learned')
    assert (learned3['split'], learned3['of'], learned3['start_rank1'], learned3['start_ranked']) == ('5', '7', '4', '7')
    assert float(learned3['wilson_low']) == pytest.approx(wilson(5, 7)[0], rel=1e-3)
    learned4 = next(r for r in rows if r['towers'] == '4' and r['population'] == 'learned')
    assert learned4['of'] == '0' and learned4['rate'] == '' and learned4['wilson_low'] == ''  # no rate, not 0
    per_run = list(csv.DictReader(open(out / 'sweep.csv', newline='')))
    assert [r['learned'] for r in per_run[2:4]] == ['yes', 'yes'] and per_run[7]['colour_beyond_control'] == 'no'
    assert (out / 'sweep.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    sweep.print_rates(summary, 90.0)
    text = capsys.readouterr().out
    assert 'learned: best validation top-1 >= 90 %' in text and '5 of 7 = 71% [95%: Wilson 36-92%' in text
    assert 'no run learned (top-1 >= 90 %): no split rate among learned runs' in text and '0 of 0' not in text
    assert 'started the most chromatic in 4 of 7 (H0: 1 in 3)' in text


def test_learned_threshold_is_an_option_stated_in_the_outputs(swept, capsys):
    out, argv = swept
    assert cli.main([*argv[:argv.index('--')], '--no-train', '--learned-top1', '0', *argv[argv.index('--'):]]) == 0
    doc = json.loads((out / 'sweep.json').read_text())
    assert doc['learned_top1'] == 0 and all(r['learned'] for r in doc['runs'])
    two = doc['summary'][1]
    assert two['learned_runs']['n'] == 2 and two['split_rate']['learned']['n'] == 2
    assert 'learned: best validation top-1 >= 0 %' in capsys.readouterr().out
    assert cli.main([*argv[:argv.index('--')], '--learned-top1', '120']) == 2
    assert '--learned-top1 is a top-1 in %' in capsys.readouterr().err


def test_a_measured_run_whose_weights_were_removed_is_reported_from_its_analysis(swept, tmp_path):
    """scripts/gpu_sweep.sh brings back run folders without weights: they are pooled by `sweep --no-train`."""
    import shutil
    out, _ = swept
    copy = tmp_path / 'towers2-seed0'
    shutil.copytree(out / 'towers2-seed0', copy)
    before = sweep.analyse_run(copy)
    for f in copy.glob('*.safetensors'):
        f.unlink()
    for f in copy.glob('*.pth.tar'):
        f.unlink()
    assert sweep.run_state(copy) == 'complete'
    assert sweep.analyse_run(copy)['effect_size'] == before['effect_size']
    (copy / sweep.ANALYSIS).unlink()
    assert sweep.run_state(copy) == 'stale'


@pytest.mark.parametrize('no_change_at', [None, 8])
def test_dose_response_reads_each_sweeps_epochs_and_rates(tmp_path, capsys, no_change_at):
    """scripts/gpu_sweep.sh dose: the same two-tower sweep at several epoch counts, one row per count, in order; a
    sweep whose runs have no conv1 change (no W0) is drawn without that point."""
    ctrl = {2: {'colour': {'mean': 0.01, 'low': 0.0, 'high': 0.05}, 'frequency': None}}
    paths = []
    for epochs, learned in ((16, 3), (4, 0), (8, 1)):
        runs = [_planted_run(1, 0, 99.0, None)]
        runs += [_planted_run(2, s, 99.0 if s < learned else 30.0, 0.1 if s < learned else 0.01, 1) for s in range(3)]
        for r in runs:
            r['conv1_from_random']['relative_change'] = None if epochs == no_change_at else epochs / 10
        sweep.mark_runs(runs, ctrl, 90.0)
        doc = {'recipe': 'none.yaml', 'train_options': ['--epochs', str(epochs), '--workers', '1'], 'runs': runs,
               'summary': sweep.summarise(runs, [1, 2], ctrl, 0.05)}
        paths.append(tmp_path / f'e{epochs}.json')
        paths[-1].write_text(json.dumps(doc))
    rows = sweep.write_dose([str(p) for p in paths], str(tmp_path / 'dose'))
    assert [r['epochs'] for r in rows] == [4, 8, 16]
    assert [(r['learned']['x'], r['split_learned']['n']) for r in rows] == [(0, 0), (1, 1), (3, 3)]
    assert rows[0]['split_learned']['estimate'] is None and rows[2]['conv1_change_mean'] == pytest.approx(1.6)
    table = list(csv.DictReader(open(tmp_path / 'dose' / 'dose.csv', newline='')))
    assert [(t['epochs'], t['learned'], t['split_learned']) for t in table] == [('4', '0/3', '0/0'), ('8', '1/3', '1/1'),
                                                                               ('16', '3/3', '3/3')]
    assert table[0]['split_learned_wilson_low'] == ''  # no learned run: no interval, not 0
    assert (tmp_path / 'dose' / 'dose.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert '4 epochs: 3 runs with 2 towers; learned 0 of 3' in capsys.readouterr().out


@pytest.mark.parametrize('content', [None, b'{"runs": [', b'[1, 2]', b'\xff\xfe'])
def test_the_dose_entry_of_the_gpu_script_refuses_a_bad_sweep_file_in_one_line(tmp_path, capsys, content):
    path = tmp_path / 'sweep.json'
    if content is not None:
        path.write_bytes(content)
    assert sweep.dose_main([str(tmp_path / 'dose'), str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('dose: error: ') and str(path) in err and '\n' not in err and 'Traceback' not in err
    assert not (tmp_path / 'dose').exists()
