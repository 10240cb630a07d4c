"""AlexNet split into towers, as Krizhevsky, Sutskever & Hinton built it in 2012.

Each tower holds a share of conv1..conv5. Towers see each other's maps only at conv3's input
and at fc6's input (the fully connected layers see everything), as the two GPUs of the paper
did. LRN normalises across a tower's own channels. Widths are the paper's totals
(96 / 256 / 384 / 384 / 256, fc 4096 / 4096) shared out across N towers; when N does not divide
a width the first towers take one channel more, so the totals (and the FLOPs) stay the paper's.
"""
from __future__ import annotations

import operator
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN
from timm.models import build_model_with_cfg, register_model, resolve_pretrained_cfg
from timm.models._features import feature_take_indices
from timm.models._registry import generate_default_cfgs
from torch.utils.checkpoint import checkpoint

from .lrn import TowerLRN

__all__ = ['AlexNetSplit', 'Tower', 'tower_widths', 'check_num_towers', 'PAPER_WIDTHS', 'MIN_INPUT_SIZE', 'MAX_TOWERS']

PAPER_WIDTHS = (96, 256, 384, 384, 256)
PAPER_FC = 4096
POOL_SIZE = 6
MIN_INPUT_SIZE = 63  # smallest square input that still leaves a 1x1 map after pool5 (224 is the paper's)
INIT_MODES = ('paper', 'caffe')
MAX_TOWERS = PAPER_WIDTHS[0]  # conv1's 96 kernels: one per tower at most


def check_num_towers(num_towers: Any) -> int:
    """``num_towers`` as an int from 1 to 96, else a ValueError (bool, float, str and None included)."""
    try:
        n = None if isinstance(num_towers, bool) else operator.index(num_towers)
    except TypeError:
        n = None
    if n is None or not 1 <= n <= MAX_TOWERS:
        raise ValueError(f'num_towers must be an integer from 1 to {MAX_TOWERS} (conv1 has {MAX_TOWERS} kernels), '
                         f'got {num_towers!r}')
    return n


def tower_widths(total: int, num_towers: int) -> List[int]:
    """Split ``total`` channels over ``num_towers``; the first ``total % N`` towers take one more."""
    base, extra = divmod(total, num_towers)
    return [base + (1 if t < extra else 0) for t in range(num_towers)]


def _checked_input(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """``x`` unchanged, after checking it is (N, in_chans, H, W) with H, W >= MIN_INPUT_SIZE; else a ValueError."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f'expected input of shape (N, {in_chans}, H, W), got {tuple(x.shape)}')
    if min(x.shape[-2:]) < MIN_INPUT_SIZE:
        raise ValueError(f'input {tuple(x.shape[-2:])} is too small: AlexNetSplit needs at least '
                         f'{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} (224x224 in the paper)')
    return x


def _pool_to_fc6_size(x: torch.Tensor) -> torch.Tensor:
    """pool5's maps as fc6 expects them, 6x6: adaptive average pooling for inputs other than 224 (see README)."""
    if x.shape[-2:] != (POOL_SIZE, POOL_SIZE):
        x = F.adaptive_avg_pool2d(x, POOL_SIZE)
    return x


def _channel_slice(z: torch.Tensor, start: int, width: int) -> torch.Tensor:
    """Channels ``start .. start + width`` of ``z``, dense and in ``z``'s layout: a channel slice of a channels_last
    tensor is strided, and the max pool after it would copy it (to NCHW where it could not tell the layout)."""
    part = z[:, start:start + width]
    if z.is_contiguous(memory_format=torch.channels_last) and not z.is_contiguous():
        return part.contiguous(memory_format=torch.channels_last)
    return part


# torch.fx records these as calls (they branch on shapes or strides), so symbolic_trace works and the traced graph
# still checks its input and pools any size
torch.fx.wrap('_checked_input')
torch.fx.wrap('_pool_to_fc6_size')
torch.fx.wrap('_channel_slice')


class Tower(nn.Module):
    """One tower's share of conv1..conv5.

    conv1, conv2, conv4 and conv5 see only this tower's maps (conv1: the whole image);
    conv3 sees the conv2 maps of every tower: its ``in_channels`` is the sum over towers.
    """

    def __init__(
            self,
            widths: Sequence[int],
            conv3_in: int,
            in_chans: int = 3,
            conv1_pad: int = 2,
            lrn: Optional[Dict[str, Any]] = None,
            ceil_mode: bool = False,
            num_towers: int = 1,
    ) -> None:
        super().__init__()
        self.num_towers = num_towers
        w1, w2, w3, w4, w5 = widths
        self.conv1 = nn.Conv2d(in_chans, w1, kernel_size=11, stride=4, padding=conv1_pad)
        self.act1 = nn.ReLU(inplace=True)
        self.norm1 = TowerLRN(**lrn) if lrn is not None else nn.Identity()
        self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=ceil_mode)
        self.conv2 = nn.Conv2d(w1, w2, kernel_size=5, padding=2)
        self.act2 = nn.ReLU(inplace=True)
        self.norm2 = TowerLRN(**lrn) if lrn is not None else nn.Identity()
        self.pool2 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=ceil_mode)
        self.conv3 = nn.Conv2d(conv3_in, w3, kernel_size=3, padding=1)
        self.act3 = nn.ReLU(inplace=True)
        self.conv4 = nn.Conv2d(w3, w4, kernel_size=3, padding=1)
        self.act4 = nn.ReLU(inplace=True)
        self.conv5 = nn.Conv2d(w4, w5, kernel_size=3, padding=1)
        self.act5 = nn.ReLU(inplace=True)
        self.pool5 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=ceil_mode)

    @property
    def device(self) -> torch.device:
        return self.conv1.weight.device

    def extra_repr(self) -> str:
        return f'conv3 sees all {self.num_towers} towers\' conv2 maps; conv1 the image; the rest this tower only'


class AlexNetSplit(nn.Module):
    """AlexNet (Krizhevsky et al., 2012) with its convolutional layers split into towers.

    Args:
        num_towers: number of towers N >= 1 (the paper: 2). At most 96 (conv1's width).
        num_classes: classifier outputs; 0 removes fc8 (the forward then returns fc7's output).
        in_chans: input channels.
        drop_rate: dropout after fc6 and after fc7 (the paper: 0.5).
        init: 'paper' (weights N(0, 0.01^2), biases 1 in conv2/4/5, fc6, fc7, else 0) or 'caffe'
            (those biases 0.1, fc6/fc7 weight std 0.005), which starts training at lr 0.01.
        lrn_size, lrn_alpha, lrn_beta, lrn_k: LRN hyper-parameters (paper: 5, 1e-4, 0.75, 2).
        lrn_alpha_over_n: divide alpha by the window size (cuda-convnet2, Caffe, PyTorch, ONNX);
            False applies the paper's printed formula k + alpha * S.
        lrn_scope: 'tower' (the paper: across the tower's own channels) or 'all' (Caffe's
            bvlc_alexnet, whose LRN layer knows nothing of groups).
        conv1_pad: conv1 padding; 2 gives the paper's 55x55 map at 224 input, Caffe uses 0 at 227.
        ceil_mode: round pooling output sizes up (Caffe) rather than down.
    """

    def __init__(
            self,
            num_towers: int = 2,
            num_classes: int = 1000,
            in_chans: int = 3,
            drop_rate: float = 0.5,
            init: str = 'paper',
            lrn_size: int = 5,
            lrn_alpha: float = 1e-4,
            lrn_beta: float = 0.75,
            lrn_k: float = 2.0,
            lrn_alpha_over_n: bool = True,
            lrn_scope: str = 'tower',
            conv1_pad: int = 2,
            ceil_mode: bool = False,
            global_pool: str = '',
            fc_width: int = PAPER_FC,
    ) -> None:
        super().__init__()
        num_towers = check_num_towers(num_towers)
        if num_classes < 0:
            raise ValueError(f'num_classes must be >= 0 (0 removes the classifier), got {num_classes}')
        if in_chans < 1:
            raise ValueError(f'in_chans must be >= 1, got {in_chans}')
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f'drop_rate must be in [0, 1), got {drop_rate}')
        if init not in INIT_MODES:
            raise ValueError(f'init must be one of {INIT_MODES}, got {init!r}')
        if lrn_scope not in ('tower', 'all'):
            raise ValueError(f"lrn_scope must be 'tower' or 'all', got {lrn_scope!r}")
        if conv1_pad < 0:
            raise ValueError(f'conv1_pad must be >= 0, got {conv1_pad}')
        if global_pool not in ('', 'avg'):
            raise ValueError(f"global_pool must be '' (flatten the 6x6 map, as the paper) or 'avg', got {global_pool!r}")
        if not isinstance(fc_width, int) or fc_width < 1:
            raise ValueError(f'fc_width (the width of fc6 and fc7, {PAPER_FC} in the paper) must be an integer >= 1, '
                             f'got {fc_width!r}')
        self.num_towers = num_towers
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.lrn_scope = lrn_scope
        self.grad_checkpointing = False
        self.global_pool = global_pool

        widths = [tower_widths(w, num_towers) for w in PAPER_WIDTHS]
        per_tower = list(zip(*widths))
        lrn_kw = dict(size=lrn_size, alpha=lrn_alpha, beta=lrn_beta, k=lrn_k, alpha_over_n=lrn_alpha_over_n)
        self.towers = nn.ModuleList([
            Tower(w, conv3_in=PAPER_WIDTHS[1], in_chans=in_chans, conv1_pad=conv1_pad,
                  lrn=lrn_kw if lrn_scope == 'tower' else None, ceil_mode=ceil_mode, num_towers=num_towers)
            for w in per_tower
        ])
        if lrn_scope == 'all':  # one LRN over the concatenated towers, as Caffe's bvlc_alexnet
            self.norm1_all = TowerLRN(**lrn_kw)
            self.norm2_all = TowerLRN(**lrn_kw)

        self.num_features = PAPER_WIDTHS[-1]
        self.head_hidden_size = fc_width
        flat = self.num_features * (1 if global_pool == 'avg' else POOL_SIZE * POOL_SIZE)
        self.pre_logits = nn.Sequential(OrderedDict([
            ('fc6', nn.Linear(flat, fc_width)),  # sees every tower
            ('act6', nn.ReLU(inplace=True)),
            ('drop6', nn.Dropout(drop_rate)),
            ('fc7', nn.Linear(fc_width, fc_width)),
            ('act7', nn.ReLU(inplace=True)),
            ('drop7', nn.Dropout(drop_rate)),
        ]))
        self.fc8 = nn.Linear(fc_width, num_classes) if num_classes > 0 else nn.Identity()

        # taps for features_only / forward_intermediates: before each max pool, towers concatenated
        self.feature_info = [
            dict(num_chs=PAPER_WIDTHS[0], reduction=4, module='towers.0.norm1'),
            dict(num_chs=PAPER_WIDTHS[1], reduction=8, module='towers.0.norm2'),
            dict(num_chs=PAPER_WIDTHS[2], reduction=16, module='towers.0.act3'),
            dict(num_chs=PAPER_WIDTHS[3], reduction=16, module='towers.0.act4'),
            dict(num_chs=PAPER_WIDTHS[4], reduction=16, module='towers.0.act5'),
        ]
        self.init_weights(init)

    # ---- initialisation -------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, mode: str = 'paper') -> None:
        """Paper: weights N(0, 0.01^2); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0.
        Caffe (bvlc_alexnet's train_val.prototxt): those biases 0.1 and fc6/fc7 weights std 0.005."""
        if mode not in INIT_MODES:
            raise ValueError(f'init must be one of {INIT_MODES}, got {mode!r}')
        one = 1.0 if mode == 'paper' else 0.1
        fc_std = 0.01 if mode == 'paper' else 0.005
        for t in self.towers:
            for name in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5'):
                conv = getattr(t, name)
                nn.init.normal_(conv.weight, 0.0, 0.01)
                nn.init.constant_(conv.bias, one if name in ('conv2', 'conv4', 'conv5') else 0.0)
        for fc in (self.pre_logits.fc6, self.pre_logits.fc7):
            nn.init.normal_(fc.weight, 0.0, fc_std)
            nn.init.constant_(fc.bias, one)
        if isinstance(self.fc8, nn.Linear):
            nn.init.normal_(self.fc8.weight, 0.0, 0.01)
            nn.init.zeros_(self.fc8.bias)

    # ---- timm interface --------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^towers\.\d+\.conv1|^norm1_all',
            blocks=[(r'^towers\.\d+\.conv(\d+)|^norm2_all', None), (r'^pre_logits\.fc(\d+)', None)],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc8

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is not None and global_pool != self.global_pool:
            raise ValueError('global_pool is fixed at construction for AlexNetSplit (fc6 is sized by it)')
        self.num_classes = num_classes
        dev = self.pre_logits.fc7.weight.device
        self.fc8 = nn.Linear(self.head_hidden_size, num_classes, device=dev) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.normal_(self.fc8.weight, 0.0, 0.01)
            nn.init.zeros_(self.fc8.bias)

    # ---- forward -----------------------------------------------------------------------------
    def _lrn(self, ys: List[torch.Tensor], idx: int) -> List[torch.Tensor]:
        if self.lrn_scope == 'tower':
            return [getattr(t, f'norm{idx}')(y) for t, y in zip(self.towers, ys)]
        dev = ys[0].device
        z = getattr(self, f'norm{idx}_all')(torch.cat([y.to(dev) for y in ys], 1))
        out, start = [], 0
        for t in self.towers:  # slices of static widths, so torch.fx can trace this too
            width = getattr(t, f'conv{idx}').out_channels
            out.append(_channel_slice(z, start, width).to(t.device))
            start += width
        return out

    def _stage_fns(self):
        """The network as five stages; each maps a list (one tensor per tower) to a list."""
        towers = self.towers

        def s1(ys):  # conv1 (every tower sees the image) -> ReLU -> LRN
            return self._lrn([t.act1(t.conv1(y)) for t, y in zip(towers, ys)], 1)

        def s2(ys):  # pool1 -> conv2 (own tower) -> ReLU -> LRN
            return self._lrn([t.act2(t.conv2(t.pool1(y))) for t, y in zip(towers, ys)], 2)

        def s3(ys):  # pool2 -> conv3: the towers meet here, every tower sees all conv2 maps
            pooled = [t.pool2(y) for t, y in zip(towers, ys)]
            return [t.act3(t.conv3(torch.cat([p.to(t.device, non_blocking=True) for p in pooled], 1)))
                    for t in towers]

        def s4(ys):
            return [t.act4(t.conv4(y)) for t, y in zip(towers, ys)]

        def s5(ys):
            return [t.act5(t.conv5(y)) for t, y in zip(towers, ys)]

        return [s1, s2, s3, s4, s5]

    def _run_stage(self, fn, ys):
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return list(checkpoint(lambda *a: tuple(fn(list(a))), *ys, use_reentrant=False))
        return fn(ys)

    def _head_in(self, ys: List[torch.Tensor]) -> torch.Tensor:
        """pool5 per tower, then the towers' maps concatenated on the head's device (fc6's input)."""
        dev = self.pre_logits.fc6.weight.device
        return _pool_to_fc6_size(torch.cat([t.pool5(y).to(dev, non_blocking=True) for t, y in zip(self.towers, ys)], 1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """conv1..pool5 of every tower, concatenated: (N, 256, 6, 6)."""
        x = _checked_input(x, self.in_chans)
        ys = [x.to(t.device, non_blocking=True) for t in self.towers]
        for fn in self._stage_fns():
            ys = self._run_stage(fn, ys)
        return self._head_in(ys)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3)) if self.global_pool == 'avg' else torch.flatten(x, 1)
        x = self.pre_logits(x)
        return x if pre_logits else self.fc8(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features at the five taps of ``feature_info`` (towers concatenated, before each max pool).

        Args:
            x: input images.
            indices: take the last n taps if int, all if None, those listed if a sequence.
            norm: unused (no final norm layer).
            stop_early: stop after the last tap wanted.
            output_fmt: 'NCHW' only.
            intermediates_only: return only the intermediates.
        """
        if output_fmt != 'NCHW':
            raise ValueError("output_fmt must be 'NCHW'")
        x = _checked_input(x, self.in_chans)
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        stages = self._stage_fns()
        if stop_early:
            stages = stages[:max_index + 1]
        dev = self.towers[0].device
        ys = [x.to(t.device) for t in self.towers]
        intermediates = []
        for i, fn in enumerate(stages):
            ys = self._run_stage(fn, ys)
            if i in take_indices:
                intermediates.append(torch.cat([y.to(dev) for y in ys], 1))
        if intermediates_only:
            return intermediates
        return self._head_in(ys), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Only the head can be pruned (towers are interleaved stage by stage)."""
        take_indices, _ = feature_take_indices(len(self.feature_info), indices)
        if prune_head:
            self.pre_logits = nn.Identity()
            self.fc8 = nn.Identity()
            self.num_classes = 0
        return take_indices


def _create(variant: str, pretrained: bool, default_towers: int, **kwargs: Any) -> AlexNetSplit:
    """build_model_with_cfg for a registered variant; ``num_towers`` in kwargs (1..96) overrides the name's count."""
    num_towers = check_num_towers(kwargs.pop('num_towers', default_towers))
    if num_towers != default_towers:  # timm adapts every tower's conv1 for other in_chans: name them all
        kwargs['pretrained_cfg_overlay'] = {'first_conv': _first_conv(num_towers), **(kwargs.get('pretrained_cfg_overlay') or {})}
    if pretrained:
        _require_weight_source(variant, num_towers, kwargs)
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3, 4))
    return build_model_with_cfg(
        AlexNetSplit,
        variant,
        pretrained,
        feature_cfg=dict(feature_cls='getter', out_indices=out_indices),
        num_towers=num_towers,
        **kwargs,
    )


def _first_conv(num_towers: int) -> Tuple[str, ...]:
    return tuple(f'towers.{t}.conv1' for t in range(num_towers))


BVLC_IMPORT = ("Caffe's ImageNet-trained bvlc_alexnet: get bvlcalexnet-12.onnx from the ONNX Model Zoo "
               "(validated/vision/classification/alexnet/model/, see docs/zoo.md), run "
               "`timm-alexnet-split import-onnx bvlcalexnet-12.onnx -o bvlc_alexnet.safetensors`, then "
               "timm.create_model('alexnet_split_2.bvlc_in1k', pretrained=True, "
               "pretrained_cfg_overlay=dict(file='bvlc_alexnet.safetensors'))")
OWN_WEIGHTS = ('weights of your own (.pth or .safetensors, e.g. a run\'s model_best.safetensors): '
               'pretrained_cfg_overlay=dict(file=PATH), or checkpoint_path=PATH for a training checkpoint '
               '(train: --pretrained-path PATH)')


def _require_weight_source(variant: str, num_towers: int, kwargs: Dict[str, Any]) -> None:
    """Raise timm's RuntimeError, saying how to get weights, when ``pretrained=True`` has nothing to load.

    This package downloads nothing: its pretrained_cfgs name no url or hub id, so weights come from a file
    (pretrained_cfg_overlay=dict(file=...)) or a state_dict. Any source timm knows is left to timm."""
    cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
    if any(getattr(cfg, k, None) for k in ('file', 'state_dict', 'url', 'hf_hub_id')) or cfg.source == 'local-dir':
        return
    name = f'{variant}.{cfg.tag}' if cfg.tag else variant
    if num_towers == 2:
        how = f'{BVLC_IMPORT}; {OWN_WEIGHTS}'
    else:
        how = (f'{OWN_WEIGHTS} (the one trained AlexNet that import-onnx reads, Caffe\'s bvlc_alexnet, has two '
               f'towers: alexnet_split_2.bvlc_in1k, see docs/zoo.md)')
    towers = f'{num_towers} tower' + ('s' if num_towers > 1 else '')
    raise RuntimeError(f'No pretrained weights exist for {name} ({towers}): this package downloads none. Load {how}.')


def _cfg(num_towers: int, **kwargs: Any) -> Dict[str, Any]:
    return {
        'url': '',
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (POOL_SIZE, POOL_SIZE),
        'crop_pct': 224 / 256, 'interpolation': 'bilinear',
        # the paper: subtract the mean pixel, keep the 0-255 scale -> timm's (x / 255 - mean) / std
        'mean': IMAGENET_DEFAULT_MEAN, 'std': (1 / 255, 1 / 255, 1 / 255),
        'first_conv': _first_conv(num_towers),
        'classifier': 'fc8',
        'license': 'apache-2.0',
        'paper_ids': 'NIPS 2012: ImageNet Classification with Deep Convolutional Neural Networks',
        **kwargs,
    }


# Caffe's bvlc_alexnet as the ONNX Model Zoo ships it (see timm_alexnet_split.zoo): weights from a
# local file only (pretrained_cfg_overlay=dict(file=...)); the layer options Caffe used, which the
# tag applies unless the caller passes them.
BVLC_MODEL_ARGS = dict(lrn_k=1.0, lrn_alpha_over_n=True, lrn_scope='all', conv1_pad=0, ceil_mode=True)
TAG_MODEL_ARGS = {'alexnet_split_2.bvlc_in1k': BVLC_MODEL_ARGS}

default_cfgs = generate_default_cfgs({
    'alexnet_split_1': _cfg(1),
    'alexnet_split_2': _cfg(2),
    'alexnet_split_2.bvlc_in1k': _cfg(
        2, input_size=(3, 227, 227), crop_pct=227 / 256, license='bsd-3-clause',
        # Caffe's mean pixel (B 104, G 117, R 123 on 0-255), in RGB order and timm's units
        mean=(123.0 / 255, 117.0 / 255, 104.0 / 255),
        notes=('Caffe bvlc_alexnet: LRN k=1 across all channels, conv1 unpadded at 227, ceil pooling',),
        origin_url='https://github.com/onnx/models (validated/vision/classification/alexnet)'),
    'alexnet_split_3': _cfg(3),
})


def _tagged_args(variant: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Model options a pretrained tag needs (Caffe's LRN, padding, pooling) unless the caller set them."""
    cfg = kwargs.get('pretrained_cfg')
    if isinstance(cfg, str):
        tag = cfg
    elif isinstance(cfg, dict):
        tag = cfg.get('tag')
    else:
        tag = getattr(cfg, 'tag', None)
    return {**TAG_MODEL_ARGS.get(f'{variant}.{tag}', {}), **kwargs}


@register_model
def alexnet_split_1(pretrained: bool = False, **kwargs: Any) -> AlexNetSplit:
    """AlexNet in one tower: the paper's one-GPU comparison network (same widths, no split).

    ``num_towers=N`` (1 to 96) builds N towers instead, with the same widths shared out."""
    return _create('alexnet_split_1', pretrained, 1, **_tagged_args('alexnet_split_1', kwargs))


@register_model
def alexnet_split_2(pretrained: bool = False, **kwargs: Any) -> AlexNetSplit:
    """AlexNet in two towers, as trained on two GPUs in the paper.

    ``num_towers=N`` (1 to 96) builds N towers instead, with the same widths shared out."""
    return _create('alexnet_split_2', pretrained, 2, **_tagged_args('alexnet_split_2', kwargs))


@register_model
def alexnet_split_3(pretrained: bool = False, **kwargs: Any) -> AlexNetSplit:
    """AlexNet in three towers (conv2/conv5 widths 86, 85, 85).

    ``num_towers=N`` (1 to 96) builds N towers instead, with the same widths shared out."""
    return _create('alexnet_split_3', pretrained, 3, **_tagged_args('alexnet_split_3', kwargs))
