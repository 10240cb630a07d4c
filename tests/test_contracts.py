"""The contracts (contracts.py): safetensors header keys that writers and readers share, old files still read."""
from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from timm_alexnet_split import contracts as C
from timm_alexnet_split.checkpoint import read_checkpoint
from timm_alexnet_split.zoo import ImportReport

KWARGS = {'conv1_pad': 0, 'ceil_mode': True, 'lrn_scope': 'all', 'lrn_alpha_over_n': True, 'lrn_size': 5,
          'lrn_alpha': 1e-4, 'lrn_beta': 0.75, 'lrn_k': 1.0}


def _write(path, meta):
    save_file({'fc8.weight': torch.zeros(10, 4)}, str(path), metadata=meta)
    return read_checkpoint(path).info


def test_the_importers_old_model_args_key_still_reads(tmp_path):
    """Files written by import-onnx before the contracts: 'model_args' with num_classes inside, no num_classes key."""
    info = _write(tmp_path / 'old.safetensors', {'format': 'pt', 'model': 'alexnet_split_2.bvlc_in1k',
                                                 'model_args': json.dumps({**KWARGS, 'num_classes': 10})})
    assert info.model == 'alexnet_split_2.bvlc_in1k' and info.num_classes == 10 and info.model_kwargs == KWARGS


def _report() -> ImportReport:
    return ImportReport(source='bvlcalexnet-12.onnx', sha256='0' * 64, opset=12, ir_version=7, producer='test',
                        input_name='data_0', input_size=(224, 224), graph_order='bgr', ends_in_softmax=True,
                        num_classes=10, model_kwargs=dict(KWARGS), layers={}, sizes=[], pool_pads=[])


def test_the_importers_header_round_trips(tmp_path):
    meta = _report().metadata()
    assert C.ST_MODEL_KWARGS in meta and C.ST_MODEL_KWARGS_OLD not in meta
    info = _write(tmp_path / 'new.safetensors', meta)
    assert info.model == 'alexnet_split_2.bvlc_in1k' and info.num_classes == 10 and info.model_kwargs == KWARGS


def test_a_trainer_style_header_round_trips(tmp_path):
    """The keys the trainer writes (by their constants) come back as ModelInfo."""
    meta = {C.ST_FORMAT: 'pt', C.ST_MODEL: 'alexnet_split_2', C.ST_NUM_CLASSES: '7', C.ST_EPOCH: '3',
            C.ST_MODEL_KWARGS: json.dumps({'fc_width': 64}), C.ST_CLASS_NAMES: json.dumps(list('abcdefg')),
            C.ST_DATA_CONFIG: json.dumps({'input_size': [3, 96, 96], 'mean': [0.5] * 3, 'std': [0.25] * 3}),
            C.ST_GLOBAL_POOL: json.dumps('avg'), C.ST_IN_CHANS: json.dumps(None)}
    info = _write(tmp_path / 'run.safetensors', meta)
    assert info.model == 'alexnet_split_2' and info.num_classes == 7 and info.class_names == list('abcdefg')
    assert info.model_kwargs == {'fc_width': 64, 'global_pool': 'avg'}
    assert info.input_size == (3, 96, 96) and info.mean == (0.5,) * 3


def test_a_header_without_kwargs_or_with_garbage_reads_as_none():
    assert C.header_model_kwargs({}) == (None, None)
    assert C.header_model_kwargs({C.ST_MODEL_KWARGS: 'not json'}) == (None, None)
    assert C.header_model_kwargs({C.ST_MODEL_KWARGS_OLD: '[1, 2]'}) == (None, None)
    new_wins = {C.ST_MODEL_KWARGS: '{"a": 1}', C.ST_MODEL_KWARGS_OLD: '{"a": 2, "num_classes": 3}'}
    assert C.header_model_kwargs(new_wins) == ({'a': 1}, None)
