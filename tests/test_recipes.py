"""Recipes speak timm train.py: every key is one of its options or ours, typed as it expects; our parser knows
every train.py option (supported, or refused by name) with train.py's flags and defaults."""
import argparse

import pytest
import yaml
from trainhelp import RECIPES_DIR

from timm_alexnet_split import train
from timm_alexnet_split.errors import UserError

RECIPES = sorted(RECIPES_DIR.glob('*.yaml'))

# Every option of timm's train.py: dest -> (option strings, default), read once from its argparse parser at
# huggingface/pytorch-image-models commit aa4b5850c1543fa488abf260f18390eda46cf85d (2026-08-08).
UPSTREAM_TRAIN_OPTIONS = {
    'data': ((), None),
    'data_dir': (('--data-dir',), None),
    'dataset': (('--dataset',), ''),
    'train_split': (('--train-split',), 'train'),
    'val_split': (('--val-split',), 'validation'),
    'train_num_samples': (('--train-num-samples',), None),
    'val_num_samples': (('--val-num-samples',), None),
    'dataset_download': (('--dataset-download',), False),
    'class_map': (('--class-map',), ''),
    'input_img_mode': (('--input-img-mode',), None),
    'input_key': (('--input-key',), None),
    'target_key': (('--target-key',), None),
    'dataset_trust_remote_code': (('--dataset-trust-remote-code',), False),
    'model': (('--model',), 'resnet50'),
    'pretrained': (('--pretrained',), False),
    'pretrained_path': (('--pretrained-path',), None),
    'initial_checkpoint': (('--initial-checkpoint',), ''),
    'resume': (('--resume',), ''),
    'no_resume_opt': (('--no-resume-opt',), False),
    'num_classes': (('--num-classes',), None),
    'gp': (('--gp',), None),
    'img_size': (('--img-size',), None),
    'in_chans': (('--in-chans',), None),
    'input_size': (('--input-size',), None),
    'crop_pct': (('--crop-pct',), None),
    'mean': (('--mean',), None),
    'std': (('--std',), None),
    'interpolation': (('--interpolation',), ''),
    'batch_size': (('-b', '--batch-size'), 128),
    'validation_batch_size': (('-vb', '--validation-batch-size'), None),
    'channels_last': (('--channels-last',), False),
    'fuser': (('--fuser',), ''),
    'grad_accum_steps': (('--grad-accum-steps',), 1),
    'grad_checkpointing': (('--grad-checkpointing',), False),
    'fast_norm': (('--fast-norm',), False),
    'model_kwargs': (('--model-kwargs',), {}),
    'head_init_scale': (('--head-init-scale',), None),
    'head_init_bias': (('--head-init-bias',), None),
    'torchcompile_mode': (('--torchcompile-mode',), None),
    'torchscript': (('--torchscript',), False),
    'torchcompile': (('--torchcompile',), None),
    'device': (('--device',), 'cuda'),
    'amp': (('--amp',), False),
    'amp_dtype': (('--amp-dtype',), 'float16'),
    'model_dtype': (('--model-dtype',), None),
    'no_ddp_bb': (('--no-ddp-bb',), False),
    'synchronize_step': (('--synchronize-step',), False),
    'local_rank': (('--local_rank',), 0),
    'device_modules': (('--device-modules',), None),
    'opt': (('--opt',), 'sgd'),
    'opt_eps': (('--opt-eps',), None),
    'opt_betas': (('--opt-betas',), None),
    'momentum': (('--momentum',), 0.9),
    'weight_decay': (('--weight-decay',), 2e-05),
    'clip_grad': (('--clip-grad',), None),
    'clip_mode': (('--clip-mode',), 'norm'),
    'layer_decay': (('--layer-decay',), None),
    'layer_decay_min_scale': (('--layer-decay-min-scale',), 0),
    'layer_decay_no_opt_scale': (('--layer-decay-no-opt-scale',), None),
    'opt_kwargs': (('--opt-kwargs',), {}),
    'sched': (('--sched',), 'cosine'),
    'sched_on_updates': (('--sched-on-updates',), False),
    'lr': (('--lr',), None),
    'lr_base': (('--lr-base',), 0.1),
    'lr_base_size': (('--lr-base-size',), 256),
    'lr_base_scale': (('--lr-base-scale',), ''),
    'lr_noise': (('--lr-noise',), None),
    'lr_noise_pct': (('--lr-noise-pct',), 0.67),
    'lr_noise_std': (('--lr-noise-std',), 1.0),
    'lr_cycle_mul': (('--lr-cycle-mul',), 1.0),
    'lr_cycle_decay': (('--lr-cycle-decay',), 0.5),
    'lr_cycle_limit': (('--lr-cycle-limit',), 1),
    'lr_k_decay': (('--lr-k-decay',), 1.0),
    'warmup_lr': (('--warmup-lr',), 1e-05),
    'min_lr': (('--min-lr',), 0),
    'epochs': (('--epochs',), 300),
    'epoch_repeats': (('--epoch-repeats',), 0.0),
    'start_epoch': (('--start-epoch',), None),
    'decay_milestones': (('--decay-milestones',), [90, 180, 270]),
    'decay_epochs': (('--decay-epochs',), 90),
    'warmup_epochs': (('--warmup-epochs',), 5),
    'warmup_prefix': (('--warmup-prefix',), False),
    'cooldown_epochs': (('--cooldown-epochs',), 0),
    'patience_epochs': (('--patience-epochs',), 10),
    'decay_rate': (('--decay-rate', '--dr'), 0.1),
    'no_aug': (('--no-aug',), False),
    'train_crop_mode': (('--train-crop-mode',), None),
    'scale': (('--scale',), [0.08, 1.0]),
    'ratio': (('--ratio',), [0.75, 1.3333333333333333]),
    'hflip': (('--hflip',), 0.5),
    'vflip': (('--vflip',), 0.0),
    'color_jitter': (('--color-jitter',), 0.4),
    'color_jitter_prob': (('--color-jitter-prob',), None),
    'grayscale_prob': (('--grayscale-prob',), None),
    'gaussian_blur_prob': (('--gaussian-blur-prob',), None),
    'aa': (('--aa',), None),
    'aug_repeats': (('--aug-repeats',), 0),
    'aug_splits': (('--aug-splits',), 0),
    'jsd_loss': (('--jsd-loss',), False),
    'bce_loss': (('--bce-loss',), False),
    'bce_sum': (('--bce-sum',), False),
    'bce_target_thresh': (('--bce-target-thresh',), None),
    'bce_pos_weight': (('--bce-pos-weight',), None),
    'reprob': (('--reprob',), 0.0),
    'remode': (('--remode',), 'pixel'),
    'recount': (('--recount',), 1),
    'resplit': (('--resplit',), False),
    'mixup': (('--mixup',), 0.0),
    'cutmix': (('--cutmix',), 0.0),
    'cutmix_minmax': (('--cutmix-minmax',), None),
    'mixup_prob': (('--mixup-prob',), 1.0),
    'mixup_switch_prob': (('--mixup-switch-prob',), 0.5),
    'mixup_mode': (('--mixup-mode',), 'batch'),
    'mixup_off_epoch': (('--mixup-off-epoch',), 0),
    'smoothing': (('--smoothing',), 0.1),
    'train_interpolation': (('--train-interpolation',), 'random'),
    'drop': (('--drop',), 0.0),
    'drop_connect': (('--drop-connect',), None),
    'drop_path': (('--drop-path',), None),
    'drop_block': (('--drop-block',), None),
    'bn_momentum': (('--bn-momentum',), None),
    'bn_eps': (('--bn-eps',), None),
    'sync_bn': (('--sync-bn',), False),
    'dist_bn': (('--dist-bn',), 'reduce'),
    'split_bn': (('--split-bn',), False),
    'model_ema': (('--model-ema',), False),
    'model_ema_force_cpu': (('--model-ema-force-cpu',), False),
    'model_ema_decay': (('--model-ema-decay',), 0.9998),
    'model_ema_warmup': (('--model-ema-warmup',), False),
    'seed': (('--seed',), 42),
    'worker_seeding': (('--worker-seeding',), 'all'),
    'log_interval': (('--log-interval',), 50),
    'val_interval': (('--val-interval',), 1),
    'recovery_interval': (('--recovery-interval',), 0),
    'checkpoint_hist': (('--checkpoint-hist',), 10),
    'workers': (('-j', '--workers'), 4),
    'save_images': (('--save-images',), False),
    'pin_mem': (('--pin-mem',), False),
    'no_prefetcher': (('--no-prefetcher',), False),
    'output': (('--output',), ''),
    'experiment': (('--experiment',), ''),
    'eval_metric': (('--eval-metric',), 'top1'),
    'tta': (('--tta',), 0),
    'use_multi_epochs_loader': (('--use-multi-epochs-loader',), False),
    'log_wandb': (('--log-wandb',), False),
    'wandb_project': (('--wandb-project',), None),
    'wandb_tags': (('--wandb-tags',), []),
    'wandb_resume_id': (('--wandb-resume-id',), ''),
    'train_img_sizes': (('--train-img-sizes',), None),
    'train_batch_sizes': (('--train-batch-sizes',), None),
    'train_size_probs': (('--train-size-probs',), None),
    'train_size_schedule': (('--train-size-schedule',), 'constant'),
    'train_size_schedule_spread': (('--train-size-schedule-spread',), 0.65),
    'train_size_random_mix': (('--train-size-random-mix',), 0.1),
    'train_batches_per_epoch': (('--train-batches-per-epoch', '--train-steps-per-epoch'), None),
    'variable_batch_loss_scale': (('--variable-batch-loss-scale',), 'none'),
    'naflex_loader': (('--naflex-loader',), False),
    'naflex_train_seq_lens': (('--naflex-train-seq-lens',), [128, 256, 576, 784, 1024]),
    'naflex_max_seq_len': (('--naflex-max-seq-len',), 576),
    'naflex_patch_sizes': (('--naflex-patch-sizes',), None),
    'naflex_patch_size_probs': (('--naflex-patch-size-probs',), None),
    'naflex_loss_scale': (('--naflex-loss-scale',), 'linear'),
    'naflex_patchify_channels_first': (('--naflex-patchify-channels-first',), False),
    'kd_model_name': (('--kd-model-name',), None),
    'kd_distill_type': (('--kd-distill-type',), 'logit'),
    'kd_loss_type': (('--kd-loss-type',), 'kl'),
    'distill_loss_weight': (('--distill-loss-weight',), None),
    'task_loss_weight': (('--task-loss-weight',), None),
    'kd_temperature': (('--kd-temperature',), 4.0),
    'kd_student_feature_dim': (('--kd-student-feature-dim',), None),
    'kd_teacher_feature_dim': (('--kd-teacher-feature-dim',), None),
    'kd_token_distill_type': (('--kd-token-distill-type',), 'soft'),
}
# where our default differs from train.py's, on purpose
OUR_DEFAULTS = {'model': 'alexnet_split_2', 'device': None}  # device None: cuda when there is one, else cpu


def _load(path):
    return yaml.safe_load(path.read_text())


def test_the_recipes_are_there():
    names = {p.stem for p in RECIPES}
    assert {'demo', 'catsdogs_split1', 'catsdogs_split2', 'catsdogs_split3', 'imagenet_split1', 'imagenet_split2',
            'imagenet_split3', 'imagenet_split2_caffe_init'} <= names


@pytest.mark.parametrize('recipe', RECIPES, ids=lambda p: p.stem)
def test_every_recipe_key_is_a_train_py_option_or_ours(recipe):
    keys = set(_load(recipe))
    assert not keys - set(UPSTREAM_TRAIN_OPTIONS) - set(train.OWN_OPTIONS)


@pytest.mark.parametrize('recipe', RECIPES, ids=lambda p: p.stem)
def test_recipe_values_need_no_conversion(recipe):
    """train.py applies YAML values as they are (parser.set_defaults): a number must be a YAML number, etc."""
    actions = train.options.option_dests(train.build_parser())
    for key, value in _load(recipe).items():
        assert train.options.coerce_config_value(actions[key], key, value, recipe.name) == value, key
        if actions[key].type in (int, float) and value is not None:
            items = value if isinstance(value, list) else [value]
            assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items), key


@pytest.mark.parametrize('recipe', RECIPES, ids=lambda p: p.stem)
def test_recipe_has_a_header_and_parses(recipe):
    text = recipe.read_text()
    header = [line for line in text.splitlines()[:40] if line.startswith('#')]
    assert text.startswith('#') and len(header) >= 4
    assert 'Needs' in ''.join(header)
    args = train.parse_args(['--config', str(recipe)])
    args.distributed = False
    train.options.check_args(args)
    ours = sorted(k for k in _load(recipe) if k in train.OWN_OPTIONS)
    for key in ours:  # the header names the keys upstream train.py ignores
        assert key in ''.join(header), key


@pytest.mark.parametrize('n', [1, 2, 3])
def test_catsdogs_recipes_are_the_documented_run(n):
    r = _load(RECIPES_DIR / f'catsdogs_split{n}.yaml')
    assert r['model'] == f'alexnet_split_{n}' and r['num_classes'] == 2
    assert (r['opt'], r['lr'], r['momentum'], r['weight_decay'], r['drop']) == ('momentum', 0.001, 0.9, 0.0005, 0.5)
    assert (r['sched'], r['plateau_metric'], r['patience_epochs'], r['decay_rate']) == ('plateau', 'train_top1', 10, 0.1)
    assert r['epochs'] == 100 and r['batch_size'] == 128 and r['warmup_epochs'] == 0
    assert r['pca_lighting'] == 0.1 and r['pca_eig'].endswith('.json') and r['smoothing'] == 0.0
    assert r['model_kwargs'] == {'init': 'paper'}


@pytest.mark.parametrize('name', ['imagenet_split1', 'imagenet_split2', 'imagenet_split3', 'imagenet_split2_caffe_init'])
def test_imagenet_recipes_are_the_paper(name):
    r = _load(RECIPES_DIR / f'{name}.yaml')
    assert (r['batch_size'], r['opt'], r['lr'], r['momentum'], r['weight_decay']) == (128, 'momentum', 0.01, 0.9, 0.0005)
    assert (r['sched'], r['plateau_metric'], r['plateau_max_decays'], r['decay_rate']) == ('plateau', 'val_top1', 3, 0.1)
    assert r['epochs'] == 90 and r['drop'] == 0.5 and r['pca_lighting'] == 0.1 and r['num_classes'] == 1000
    assert r['model_kwargs'] == {'init': 'caffe' if 'caffe' in name else 'paper'}


def test_the_caffe_variant_changes_only_the_initialisation():
    paper, caffe = (_load(RECIPES_DIR / f'{n}.yaml') for n in ('imagenet_split2', 'imagenet_split2_caffe_init'))
    differ = {k for k in paper.keys() | caffe.keys() if paper.get(k) != caffe.get(k)}
    assert differ == {'model_kwargs', 'experiment'}


def test_every_train_py_option_is_supported_or_refused_by_name():
    ours = train.options.option_dests(train.build_parser())
    for dest in UPSTREAM_TRAIN_OPTIONS:
        assert (dest in ours) != (dest in train.UNSUPPORTED), dest
    assert set(train.UNSUPPORTED) <= set(UPSTREAM_TRAIN_OPTIONS)


def test_supported_options_keep_train_py_flags_and_defaults():
    ours = train.options.option_dests(train.build_parser())
    for dest, (flags, default) in UPSTREAM_TRAIN_OPTIONS.items():
        if dest in train.UNSUPPORTED:
            assert train.UNSUPPORTED[dest][0] == default, dest
            continue
        assert set(flags) <= set(ours[dest].option_strings), dest
        assert ours[dest].default == OUR_DEFAULTS.get(dest, default), dest


def test_our_options_are_not_train_py_options():
    ours = train.options.option_dests(train.build_parser())
    assert not set(train.OWN_OPTIONS) & set(UPSTREAM_TRAIN_OPTIONS)
    assert set(train.OWN_OPTIONS) <= set(ours)
    assert set(ours) == set(UPSTREAM_TRAIN_OPTIONS) - set(train.UNSUPPORTED) | set(train.OWN_OPTIONS)


def test_an_unsupported_train_py_flag_is_refused_by_name():
    flags = {f for dest, (fl, _) in UPSTREAM_TRAIN_OPTIONS.items() if dest in train.UNSUPPORTED for f in fl}
    for flag in sorted(flags):
        with pytest.raises(UserError, match='not supported'):
            train.parse_args([flag])
    assert isinstance(train.parse_args([]), argparse.Namespace)
