"""`needle train/eval/generate` with the language models (needle.tasks.language), the KJV
converter (needle.data.datasets.kjv) and optim.clip_grad_norm.

Runs use tiny generated corpora in PTB format (``--dataset ptb --data-dir``) and tiny
models, so each takes seconds; the conversion of the real KJV is marked slow.
"""

from __future__ import annotations

import csv
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import assert_same_state, run_main
from helpers.datasets import write_ptb_folder

import needle as ndl
from needle import optim, tasks, training
from needle.data import Corpus, DatasetNotFoundError
from needle.data.datasets import kjv
from needle.tasks import language

TINY = [
    "--embedding-dim",
    "8",
    "--hidden-dim",
    "8",
    "--batch-size",
    "4",
    "--seq-len",
    "6",
    "--lr",
    "0.01",
    "--weight-decay",
    "0",
    "--drop-prob",
    "0.1",
    "--no-progress",
]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    return write_ptb_folder(tmp_path_factory.mktemp("ptb") / "data")


def train(corpus_dir: Path, out: Path, model: str, *extra: str) -> int:
    return run_main(
        "train",
        "--model",
        model,
        "--dataset",
        "ptb",
        "--data-dir",
        corpus_dir,
        *TINY,
        "--out",
        out,
        *extra,
    )


def read_metrics(out: Path) -> list[dict[str, str]]:
    with open(out / training.METRICS_NAME) as file:
        return list(csv.DictReader(file))


# ----- end to end --------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(language.MODELS))
def test_one_epoch_of_each_model_writes_perplexity(corpus_dir, tmp_path, model, capsys):
    out = tmp_path / model
    assert train(corpus_dir, out, model, "--epochs", "1", "--clip-grad", "0.5") == 0
    rows = read_metrics(out)
    assert list(rows[0]) == [
        "epoch",
        "train_loss",
        "train_err",
        "test_loss",
        "test_err",
        "train_ppl",
        "test_ppl",
        "seconds",
    ]
    row = rows[0]
    for split in ("train", "test"):
        assert float(row[f"{split}_ppl"]) == pytest.approx(math.exp(float(row[f"{split}_loss"])))
        assert 0.0 <= float(row[f"{split}_err"]) <= 1.0
        assert 1.0 < float(row[f"{split}_ppl"]) < math.inf
    assert (out / training.CURVES_NAME).stat().st_size > 0
    printed = capsys.readouterr().out
    assert f"ppl {float(row['test_ppl']):.2f}" in printed
    assert "vocabulary 21" in printed


def test_resume_is_bit_identical(corpus_dir, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(corpus_dir, straight, "lstm-lm", "--epochs", "2") == 0
    assert train(corpus_dir, split, "lstm-lm", "--epochs", "1") == 0
    assert run_main("train", "--resume", "--out", split, "--epochs", "2", "--no-progress") == 0
    assert_same_state(straight, split)


def test_resume_refuses_a_corpus_whose_vocabulary_changed(tmp_path, capsys):
    data = write_ptb_folder(tmp_path / "data")
    assert train(data, tmp_path / "out", "rnn-lm", "--epochs", "1") == 0
    with open(data / "train.txt", "a") as file:
        file.write(" a brand new word \n")
    assert run_main("train", "--resume", "--out", tmp_path / "out", "--epochs", "2") == 2
    assert "the data have changed" in capsys.readouterr().err


def test_training_lowers_the_test_perplexity(corpus_dir, tmp_path):
    out = tmp_path / "out"
    assert train(corpus_dir, out, "rnn-lm", "--epochs", "3", "--drop-prob", "0") == 0
    ppl = [float(row["test_ppl"]) for row in read_metrics(out)]
    assert ppl[-1] < ppl[0]


def test_eval_reports_the_last_epoch_test_loss(corpus_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert train(corpus_dir, out, "transformer-lm", "--epochs", "1") == 0
    loss = float(read_metrics(out)[-1]["test_loss"])
    capsys.readouterr()
    assert run_main("eval", "--checkpoint", out / training.CHECKPOINT_NAME) == 0
    printed = capsys.readouterr().out
    assert f"test loss {loss:.4f}" in printed and f"ppl {math.exp(loss):.2f}" in printed


def test_eval_refuses_a_corpus_with_another_vocabulary(corpus_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert train(corpus_dir, out, "rnn-lm", "--epochs", "1") == 0
    other = write_ptb_folder(tmp_path / "other", seed=1, lines=(5, 2))
    status = run_main("eval", "--checkpoint", out / training.CHECKPOINT_NAME, "--data-dir", other)
    assert status == 2
    assert "another vocabulary" in capsys.readouterr().err


def test_clip_grad_bounds_each_update(corpus_dir):
    """With SGD (lr 1, no momentum) and clipping to c, one step moves the weights by c."""
    config = training.TrainConfig(
        model="rnn-lm",
        dataset="ptb",
        data_dir=str(corpus_dir),
        embedding_dim=8,
        hidden_dim=8,
        batch_size=4,
        seq_len=6,
        optimizer="sgd",
        lr=1.0,
        weight_decay=0.0,
        drop_prob=0.0,
        clip_grad=1e-3,
    )
    task = tasks.create(config)
    np.random.seed(0)
    model = task.build_model()
    opt = training.build_optimizer(model, config)
    before = [p.numpy().copy() for p in model.parameters()]
    chunk = next(iter(task.loader(task.dataset(True), True)))
    task.run_epoch([chunk], model, opt)
    moved = math.sqrt(sum(np.sum((p.numpy() - b) ** 2) for p, b in zip(model.parameters(), before)))
    assert moved == pytest.approx(1e-3, rel=1e-3)


# ----- generate ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(corpus_dir, tmp_path_factory) -> Callable[[str], Path]:
    """``checkpoints(model)``: a one-epoch checkpoint of ``model`` (trained once)."""
    made: dict[str, Path] = {}

    def get(model: str) -> Path:
        if model not in made:
            out = tmp_path_factory.mktemp(model) / "out"
            assert train(corpus_dir, out, model, "--epochs", "1") == 0
            made[model] = out / training.CHECKPOINT_NAME
        return made[model]

    return get


@pytest.fixture(scope="module")
def lm_checkpoint(checkpoints) -> Path:
    return checkpoints("lstm-lm")


def test_generate_is_deterministic_given_a_seed(lm_checkpoint):
    first = language.generate(lm_checkpoint, "the cat", length=30, seed=3)
    again = language.generate(lm_checkpoint, "the cat", length=30, seed=3)
    other = language.generate(lm_checkpoint, "the cat", length=30, seed=4)
    assert first == again
    assert first.text != other.text
    assert first.text.startswith("the cat ")
    assert len(first.text.split()) == 2 + 30 - first.text.count("\n")


def _greedy_by_hand(checkpoint: Path, prompt: list[str], length: int) -> list[str]:
    """Greedy decoding rerunning the sequence (its last seq_len words) every step."""
    state = training.load_checkpoint(checkpoint)
    vocabulary = language.saved_vocabulary(state["task"])
    config = training.checkpoint_config(checkpoint)
    model = language.build_language_model(config, len(vocabulary))
    model.load_state_dict(state["model"])
    model.eval()
    ids = [vocabulary.index(w) for w in prompt]
    for _ in range(length):
        window = ids[-config.seq_len :]  # at most seq_len words: the Transformer's positions
        x = ndl.Tensor(np.array(window, dtype=np.float32)[:, None], requires_grad=False)
        ids.append(int(np.argmax(model(x)[0].numpy()[-1])))
    return [vocabulary[i] for i in ids]


@pytest.mark.parametrize(
    "model, temperature",
    [("lstm-lm", 0.0), ("lstm-lm", 1e-8), ("rnn-lm", 0.0), ("transformer-lm", 0.0)],
)
def test_temperature_near_zero_is_greedy(checkpoints, model, temperature):
    length = 4  # prompt + 4 words = TINY's --seq-len: the window is the whole sequence
    result = language.generate(
        checkpoints(model), "a big", length=length, temperature=temperature, seed=5
    )
    expected = _greedy_by_hand(checkpoints(model), ["a", "big"], length)
    assert result.text.split() == [w for w in expected if w != "<eos>"]


def test_the_transformer_generates_past_its_window(checkpoints):
    result = language.generate(checkpoints("transformer-lm"), "a big", length=20, seed=2)
    assert len(result.text.split()) == 22 - result.text.count("\n")


def test_sample_next_follows_the_tempered_softmax():
    logits = np.array([1.0, 2.0, 0.0, -1.0])
    rng = np.random.default_rng(0)
    for temperature in (0.5, 2.0):
        draws = (
            np.bincount(
                [language.sample_next(logits, temperature, rng) for _ in range(4000)], minlength=4
            )
            / 4000
        )
        expected = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
        np.testing.assert_allclose(draws, expected, atol=0.03)


def test_generate_reads_unknown_words_as_unk(lm_checkpoint, capsys):
    assert (
        run_main(
            "generate",
            "--checkpoint",
            lm_checkpoint,
            "--prompt",
            "the zebra",
            "--length",
            "3",
            "--seed",
            "1",
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "<unk>" in captured.err and "zebra" in captured.err
    # This corpus has no <unk>, so the unknown word is left out of the context.
    assert captured.out.startswith("the ") and "zebra" not in captured.out
    assert language.encode_prompt("the zebra", ["the", "<unk>"]) == ([0, 1], ["zebra"])


def test_generate_does_not_touch_numpy_global_generator(lm_checkpoint):
    np.random.seed(11)
    expected = np.random.rand()
    np.random.seed(11)
    language.generate(lm_checkpoint, "the", length=2)
    assert np.random.rand() == expected


# ----- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "-1"], "--temperature"),
        (["--length", "0"], "--length"),
    ],
)
def test_generate_rejects_bad_options(lm_checkpoint, args, message, capsys):
    assert run_main("generate", "--checkpoint", lm_checkpoint, *args) == 2
    assert message in capsys.readouterr().err


def test_generate_refuses_an_image_checkpoint(tmp_path, capsys):
    path = tmp_path / "checkpoint.npz"
    ndl.save(
        {
            "format": training.CHECKPOINT_FORMAT,
            "config": training.TrainConfig(model="cnn").to_dict(),
        },
        path,
    )
    assert run_main("generate", "--checkpoint", path) == 2
    assert "not a language model" in capsys.readouterr().err


def test_ptb_without_data_dir_says_what_it_needs(tmp_path, capsys):
    assert run_main("train", "--model", "lstm-lm", "--dataset", "ptb", "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "train.txt" in err


def test_missing_corpus_files_name_the_file_and_the_install_command(tmp_path, capsys):
    assert (
        run_main(
            "train",
            "--model",
            "rnn-lm",
            "--dataset",
            "ptb",
            "--data-dir",
            tmp_path,
            "--out",
            tmp_path / "out",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert str(tmp_path / "train.txt") in err and "apt-get install bible-kjv" in err


def test_kjv_without_the_bible_program_gives_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DatasetNotFoundError, match="apt-get install bible-kjv"):
        kjv.kjv_folder(tmp_path / "kjv")
    assert not (tmp_path / "kjv").exists()


def test_an_image_dataset_is_refused_for_a_language_model(tmp_path, capsys):
    assert run_main("train", "--model", "lstm-lm", "--dataset", "mnist", "--out", tmp_path) == 2
    assert "unknown dataset 'mnist' for --model lstm-lm; use one of kjv, ptb" in (
        capsys.readouterr().err
    )


def test_a_batch_wider_than_the_text_is_refused(corpus_dir, tmp_path, capsys):
    assert train(corpus_dir, tmp_path, "rnn-lm", "--limit-test", "10", "--batch-size", "8") == 2
    assert "10 tokens cannot make BPTT chunks of --batch-size 8" in capsys.readouterr().err


def test_a_language_model_defaults_to_kjv():
    assert training.TrainConfig(model="transformer-lm").dataset == "kjv"


#: The language task's defaults, as docs/training.md lists them.
LANGUAGE_DEFAULTS = dict(
    epochs=2,
    batch_size=16,
    seq_len=20,
    embedding_dim=128,
    hidden_dim=256,
    lr=0.005,
    weight_decay=0.0,
    drop_prob=0.0,
    clip_grad=1.0,
)


def test_a_language_model_trains_with_its_tasks_defaults(corpus_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        run_main(
            "train",
            "--model",
            "rnn-lm",
            "--dataset",
            "ptb",
            "--data-dir",
            corpus_dir,
            "--epochs",
            "1",
            "--no-progress",
            "--out",
            out,
        )
        == 0
    )
    saved = training.checkpoint_config(out / training.CHECKPOINT_NAME)
    assert {k: getattr(saved, k) for k in LANGUAGE_DEFAULTS} == {**LANGUAGE_DEFAULTS, "epochs": 1}
    header = capsys.readouterr().out.splitlines()[0]
    assert header.endswith(f"adam lr 0.005, batch 16, weight decay 0, clip 1, 1 epoch -> {out}")


def test_options_given_win_over_the_tasks_defaults(corpus_dir, tmp_path):
    out = tmp_path / "out"
    assert (
        run_main(
            "train",
            "--model",
            "lstm-lm",
            "--dataset",
            "ptb",
            "--data-dir",
            corpus_dir,
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--lr",
            "0.01",
            "--hidden-dim",
            "8",
            "--embedding-dim",
            "8",
            "--no-progress",
            "--out",
            out,
        )
        == 0
    )
    saved = training.checkpoint_config(out / training.CHECKPOINT_NAME)
    assert (saved.batch_size, saved.lr, saved.hidden_dim, saved.embedding_dim) == (4, 0.01, 8, 8)
    assert (saved.seq_len, saved.weight_decay, saved.clip_grad) == (20, 0.0, 1.0)


def test_image_models_keep_the_course_recipe():
    assert tasks.task_defaults("mlp-resnet") == tasks.task_defaults("cnn") == {}
    config = training.TrainConfig.for_task(model="cnn")
    assert (config.batch_size, config.lr, config.weight_decay, config.epochs) == (
        100,
        0.001,
        0.001,
        10,
    )
    assert (
        training.TrainConfig.for_task(model="lstm-lm").to_dict()
        == training.TrainConfig(model="lstm-lm", **LANGUAGE_DEFAULTS).to_dict()
    )


@pytest.mark.slow  # one epoch on 20,000 tokens and the evaluation on 42,087: ~20-60 s
@pytest.mark.skipif(shutil.which("bible") is None, reason="bible-kjv is not installed")
def test_lstm_defaults_beat_the_unigram_baseline_on_20000_kjv_tokens(tmp_path):
    """The docs' claim: no option but --epochs 1 --limit-train 20000 beats the unigram
    model counted on the same tokens by far."""
    out = tmp_path / "out"
    assert (
        run_main(
            "train",
            "--model",
            "lstm-lm",
            "--epochs",
            "1",
            "--limit-train",
            "20000",
            "--no-progress",
            "--out",
            out,
        )
        == 0
    )
    corpus = Corpus(language.corpus_folder(training.TrainConfig(model="lstm-lm")))
    baseline = language.unigram_perplexity(
        corpus.train[:20000], corpus.test, len(corpus.dictionary)
    )
    assert float(read_metrics(out)[0]["test_ppl"]) < 0.75 * baseline


def test_the_first_kjv_conversion_says_what_it_is_doing(tmp_path, monkeypatch, capsys):
    verses = ["In the beginning God created."] * 200
    monkeypatch.setattr(kjv, "read_kjv_verses", lambda program="bible": verses)
    folder = kjv.kjv_folder(tmp_path / "kjv")
    assert capsys.readouterr().err == (
        f"converting the King James Bible PTB-style into {folder} (first use only)\n"
    )
    assert kjv.has_corpus(folder)
    kjv.kjv_folder(tmp_path / "kjv")
    assert capsys.readouterr().err == ""


# ----- clip_grad_norm ------------------------------------------------------------------------


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 100.0])
def test_clip_grad_norm_matches_numpy(rng, max_norm):
    shapes = [(3, 4), (5,), (2, 2, 2)]
    params = [ndl.Tensor(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    for p, g in zip(params, grads):
        p.grad = ndl.Tensor(g, requires_grad=False)
    skipped = ndl.Tensor(np.ones(2, dtype=np.float32))  # no grad: ignored
    total = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
    assert optim.clip_grad_norm(params + [skipped], max_norm) == pytest.approx(total, rel=1e-6)
    scale = min(1.0, max_norm / (total + 1e-6))
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad.numpy(), g * scale, rtol=1e-6)
    assert skipped.grad is None


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_clip_grad_norm_rejects_a_bad_norm(bad):
    with pytest.raises(ValueError, match="clip_grad_norm.*max_norm"):
        optim.clip_grad_norm([], bad)


def test_clip_grad_option_must_be_positive(tmp_path, capsys):
    assert run_main("train", "--model", "rnn-lm", "--clip-grad", "0", "--out", tmp_path) == 2
    assert "--clip-grad" in capsys.readouterr().err


# ----- the corpus --------------------------------------------------------------------------


def test_ptb_tokens():
    assert kjv.ptb_tokens("The LORD's 3,000 sheep-folds; Moses' rod, (and) 12.5!") == [
        "the",
        "lord",
        "'s",
        "N",
        "sheep-folds",
        "moses",
        "rod",
        "and",
        "N",
    ]


def test_split_of_sends_blocks_of_verses_to_each_split():
    splits = [kjv.split_of(i) for i in range(20 * kjv.BLOCK_VERSES)]
    assert splits.count(1) == splits.count(2) == kjv.BLOCK_VERSES
    assert splits[18 * kjv.BLOCK_VERSES : 19 * kjv.BLOCK_VERSES] == [1] * kjv.BLOCK_VERSES
    assert kjv.split_of(20 * kjv.BLOCK_VERSES) == 0


def test_write_corpus_keeps_the_most_frequent_training_words(tmp_path):
    verses = ["Aa aa bb!", "bb cc", "DD 7"] * kjv.BLOCK_VERSES * 7  # 1050 verses: 21 blocks
    folder = kjv.write_corpus(verses, tmp_path / "corpus", vocab_words=2)
    train = (folder / "train.txt").read_text().splitlines()
    assert train[:3] == [" aa aa bb ", " bb <unk> ", " <unk> <unk> "]
    assert len(train) == 19 * kjv.BLOCK_VERSES  # blocks 0-17 and 20
    corpus = Corpus(folder)
    assert sorted(corpus.dictionary.idx2word) == ["<eos>", "<unk>", "aa", "bb"]
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]  # no temporary folder left


def test_write_corpus_replaces_an_old_folder(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "stale.txt").write_text("x")
    kjv.write_corpus(["one two"] * 3, tmp_path / "corpus")
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == list(sorted(kjv.SPLIT_FILES))


def test_unigram_perplexity_by_hand():
    # Vocabulary 3, train counts (2, 1, 0): add-one p = 3/6, 2/6, 1/6.
    ppl = language.unigram_perplexity([0, 0, 1], [0, 2, 2], 3)
    assert ppl == pytest.approx(math.exp(-(math.log(3 / 6) + 2 * math.log(1 / 6)) / 3))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bible") is None, reason="bible-kjv is not installed")
def test_the_real_kjv_converts_to_a_10000_word_corpus(tmp_path):
    folder = kjv.build_kjv(tmp_path / "kjv")
    corpus = Corpus(folder)
    assert len(corpus.dictionary) == 10000
    lines = [len((folder / name).read_text().splitlines()) for name in kjv.SPLIT_FILES]
    assert sum(lines) == kjv.KJV_VERSES
    assert (
        (folder / "train.txt")
        .read_text()
        .startswith(" in the beginning god created the heaven and the earth \n")
    )


# ----- LanguageModel's dropout -----------------------------------------------------------------


def _ids() -> ndl.Tensor:
    return ndl.Tensor(np.array([[1, 2], [3, 4], [0, 5]], dtype=np.float32), requires_grad=False)


@pytest.mark.parametrize("seq_model", ["rnn", "lstm"])
def test_dropout_zero_is_the_course_model_and_draws_nothing(seq_model):
    from needle.apps.models_lm import LanguageModel

    np.random.seed(2)
    course = LanguageModel(4, 6, 5, 1, seq_model)
    np.random.seed(2)
    ours = LanguageModel(4, 6, 5, 1, seq_model, dropout=0.0)
    assert ours.dropout is None
    state = np.random.get_state()[1].copy()
    np.testing.assert_array_equal(course(_ids())[0].numpy(), ours(_ids())[0].numpy())
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # train mode, no draw


def test_dropout_is_applied_in_training_only():
    from needle.apps.models_lm import LanguageModel

    np.random.seed(3)
    model = LanguageModel(4, 6, 5, 1, "lstm", dropout=0.5)
    model.eval()
    first, again = model(_ids())[0].numpy(), model(_ids())[0].numpy()
    np.testing.assert_array_equal(first, again)
    model.train()
    assert not np.array_equal(model(_ids())[0].numpy(), first)


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_language_model_rejects_a_bad_dropout(bad):
    from needle.apps.models_lm import LanguageModel

    with pytest.raises(ValueError, match="LanguageModel: dropout"):
        LanguageModel(4, 6, 5, dropout=bad)
