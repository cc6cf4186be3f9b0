"""The input pipeline on data built by the real builder."""

import numpy as np
import pytest

from ffjax.data import pipeline
from tests.helpers import config_on


def dataset_config(tiny_dataset, **augment):
    return config_on(tiny_dataset, augment=augment)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_class_balanced_batches_are_half_real_half_fake(tiny_dataset):
    config = dataset_config(tiny_dataset)
    split = pipeline.open_split(config.dataset, "train")
    labels = pipeline.read_labels(split)
    assert labels.mean() == pytest.approx(0.8)  # four fakes (label 1) per original before balancing
    for batch in take(iter(pipeline.train_dataset(split, config, 8)), 5):
        assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.uint8
        assert batch["mask"].shape == (8, 32, 32)
        assert batch["label"].tolist() == [0, 1] * 4
        assert not batch["mask"][batch["label"] == 0].any()  # originals have empty masks


def test_same_seed_same_stream_and_resume_from_state(tiny_dataset):
    config = dataset_config(tiny_dataset)
    split = pipeline.open_split(config.dataset, "train")
    a = iter(pipeline.train_dataset(split, config, 8))
    first = take(a, 3)
    state = a.get_state()
    rest = take(a, 3)
    b = iter(pipeline.train_dataset(split, config, 8))
    b.set_state(state)
    for x, y in zip(rest, take(b, 3)):
        for key in pipeline.TRAIN_KEYS:
            np.testing.assert_array_equal(x[key], y[key])
    c = iter(pipeline.train_dataset(split, config, 8))
    np.testing.assert_array_equal(first[0]["image"], next(c)["image"])


def test_the_global_batch_at_a_step_is_the_same_on_any_process_count(tiny_dataset, monkeypatch):
    """What makes a checkpoint resume on another slice size: global batch k, stitched from the
    processes' slices, is the same for 1, 2 or 4 processes, and `start_batch` resumes it."""
    import jax

    config = dataset_config(tiny_dataset)
    split = pipeline.open_split(config.dataset, "train")
    whole = take(iter(pipeline.train_dataset(split, config, 8)), 5)
    for processes in (2, 4):
        monkeypatch.setattr(jax, "process_count", lambda: processes)
        slices = []
        for index in range(processes):
            monkeypatch.setattr(jax, "process_index", lambda: index)
            slices.append(take(iter(pipeline.train_dataset(split, config, 8, start_batch=3)), 2))
        for k in range(2):
            for key in pipeline.TRAIN_KEYS:
                stitched = np.concatenate([s[k][key] for s in slices])
                np.testing.assert_array_equal(stitched, whole[3 + k][key], err_msg=f"{processes} processes, {key}")


def test_worker_processes_give_the_same_batches(tiny_dataset):
    config = dataset_config(tiny_dataset)
    split = pipeline.open_split(config.dataset, "train")
    inline = take(iter(pipeline.train_dataset(split, config, 8)), 3)
    with config.unlocked():
        config.dataset.num_workers = 1
    workers = take(iter(pipeline.train_dataset(split, config, 8)), 3)
    for x, y in zip(inline, workers):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["mask"], y["mask"])


def test_rows_carry_their_global_stream_position(tiny_dataset):
    """The key of the step's device augmentation: row j of global batch k is position 8k + j."""
    config = dataset_config(tiny_dataset)
    split = pipeline.open_split(config.dataset, "train")
    for k, batch in enumerate(take(iter(pipeline.train_dataset(split, config, 8, start_batch=2)), 2), start=2):
        assert batch["position"].dtype == np.uint32 and batch["position"].shape == (8, 2)
        np.testing.assert_array_equal(batch["position"][:, 0], 0)
        np.testing.assert_array_equal(batch["position"][:, 1], 8 * k + np.arange(8))


@pytest.mark.parametrize("per_batch", [16, 24])
def test_eval_batches_cover_every_record_once(tiny_dataset, per_batch):
    config = dataset_config(tiny_dataset)
    split = pipeline.open_split(config.dataset, "val")
    seen = []
    batches = list(pipeline.eval_batches(split, per_batch))
    assert len(batches) == -(-len(split) // per_batch)
    for arrays, meta in batches:
        assert arrays["image"].shape[0] == per_batch
        valid = arrays["valid"]
        assert (meta["frame_index"][~valid] == -1).all()
        seen += [(v, int(f)) for v, f in zip(meta["video_id"][valid], meta["frame_index"][valid])]
    assert len(seen) == len(set(seen)) == len(split)
    assert any(not b[0]["valid"].all() for b in batches) == (len(split) % per_batch != 0)


def test_train_methods_keep_one_methods_fakes_and_every_original(tiny_dataset):
    """The cross-manipulation protocol: train on Face2Face's fakes (and the originals) only."""
    from ffjax.data import ffpp

    config = dataset_config(tiny_dataset)
    with config.unlocked():
        config.dataset.train_methods = ("Face2Face",)
    split = pipeline.open_split(config.dataset, "train")
    seen = set()
    for batch in take(iter(pipeline.train_dataset(split, config, 8)), 6):
        assert batch["label"].tolist() == [0, 1] * 4
        seen |= {ffpp.METHOD_NAMES[m] for m in batch["method_id"][batch["label"] == 1]}
        assert set(batch["method_id"][batch["label"] == 0]) == {0}
    assert seen == {"Face2Face"}
    with config.unlocked():
        config.dataset.train_methods = ("DeepFaceLab",)
    with pytest.raises(ValueError, match="train_methods"):
        pipeline.train_dataset(split, config, 8)
