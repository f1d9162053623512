"""PTB-style data (Dictionary, Corpus, batchify, get_batch), LanguageModel and the PTB loops."""

import math

import numpy as np
import pytest

import needle as ndl
import needle.nn as nn
from needle.apps.models_lm import LanguageModel
from needle.apps.simple_ml import epoch_general_ptb, evaluate_ptb, train_ptb
from needle.data import Corpus, DatasetNotFoundError, Dictionary, batchify, get_batch


@pytest.fixture
def ptb_dir(tmp_path):
    # PTB lines start and end with a space; a tab and double spaces must split like spaces.
    (tmp_path / "train.txt").write_text(" the cat sat \n the  dog\tran \n a cat ran \n")
    (tmp_path / "test.txt").write_text(" the bird sat \n unseen word \n")
    return tmp_path


def test_dictionary_ids_in_first_seen_order():
    d = Dictionary()
    assert [d.add_word(w) for w in ["b", "a", "b", "c"]] == [0, 1, 0, 2]
    assert d.idx2word == ["b", "a", "c"] and d.word2idx == {"b": 0, "a": 1, "c": 2}
    assert len(d) == 3


def test_corpus_tokenizes_train_first_with_eos(ptb_dir):
    corpus = Corpus(ptb_dir)
    words = corpus.dictionary.idx2word
    assert [words[i] for i in corpus.train] == (
        "the cat sat <eos> the dog ran <eos> a cat ran <eos>".split()
    )
    assert [words[i] for i in corpus.test] == "the bird sat <eos> unseen word <eos>".split()
    assert corpus.train[:4] == [0, 1, 2, 3]  # ids follow first appearance, train first
    assert len(corpus.dictionary) == 10


def test_corpus_max_lines_applies_per_file(ptb_dir):
    corpus = Corpus(ptb_dir, max_lines=1)
    assert len(corpus.train) == 4 and len(corpus.test) == 4
    assert Corpus(ptb_dir, max_lines=0).train == []


def test_corpus_missing_file_names_the_path(tmp_path):
    (tmp_path / "train.txt").write_text("a b\n")
    with pytest.raises(DatasetNotFoundError, match=r"test\.txt.*train\.txt and test\.txt"):
        Corpus(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Corpus(tmp_path / "nowhere")


def test_batchify_columns_are_contiguous_streams():
    batches = batchify(list(range(11)), 3)
    assert isinstance(batches, np.ndarray) and batches.shape == (3, 3)
    np.testing.assert_array_equal(batches[:, 1], [3, 4, 5])  # data[nbatch : 2·nbatch]
    np.testing.assert_array_equal(batches, np.arange(9).reshape(3, 3).T)


@pytest.mark.parametrize("batch_size", [0, 12, -1])
def test_batchify_rejects_impossible_batch_sizes(batch_size):
    with pytest.raises(ValueError, match=rf"batch_size={batch_size} for 11 tokens.*<= 11"):
        batchify(list(range(11)), batch_size)


def test_get_batch_shapes_values_and_short_last_chunk():
    batches = batchify(list(range(20)), 2)  # (10, 2)
    data, target = get_batch(batches, 0, 4)
    assert data.shape == (4, 2) and target.shape == (8,)
    assert data.dtype == "float32" and target.dtype == "float32"
    assert not data.requires_grad and not target.requires_grad
    np.testing.assert_array_equal(target.numpy(), batches[1:5].reshape(-1))
    data, target = get_batch(batches, 8, 4)  # only one row left after row 8
    np.testing.assert_array_equal(data.numpy(), batches[8:9])
    np.testing.assert_array_equal(target.numpy(), batches[9])
    with pytest.raises(ValueError, match=r"no chunk at i=9 with bptt=4 in 10 rows"):
        get_batch(batches, 9, 4)
    with pytest.raises(ValueError, match="need bptt >= 1"):
        get_batch(batches, 0, 0)
    with pytest.raises(ValueError, match=r"0 <= i <= 8"):
        get_batch(batches, -1, 4)


# ----- LanguageModel ---------------------------------------------------------------------------


def test_language_model_positional_arguments_and_time_major_logits(rng):
    model = LanguageModel(4, 10, 6, 2, "lstm")
    assert model.embedding.weight.shape == (10, 4)
    assert len(model.seq_model.lstm_cells) == 2 and model.linear.weight.shape == (6, 10)
    ids = ndl.Tensor(rng.integers(0, 10, (3, 2)).astype(np.float32), requires_grad=False)
    logits, (h, c) = model(ids)
    out, _ = model.seq_model(model.embedding(ids))
    row = model.linear(out.reshape((6, 6))).numpy()
    np.testing.assert_allclose(logits.numpy(), row, rtol=1e-6)
    # row t·B + b belongs to time t, batch b
    single, _ = model(ndl.Tensor(ids.numpy()[:, 1:], requires_grad=False))
    np.testing.assert_allclose(logits.numpy()[1::2], single.numpy(), rtol=1e-5, atol=1e-6)
    assert h.shape == c.shape == (2, 2, 6)


@pytest.mark.parametrize("seq_model", ["rnn", "lstm", "transformer"])
def test_language_model_draw_order(seq_model):
    def make():
        return LanguageModel(4, 10, 6, 1, seq_model, seq_len=5)

    def replay():
        embedding = np.random.randn(10, 4)
        if seq_model == "transformer":
            nn.Transformer(4, 6, 1, sequence_len=5)
        else:
            (nn.RNN if seq_model == "rnn" else nn.LSTM)(4, 6, 1)
        head_in = 4 if seq_model == "transformer" else 6
        weight_bound = math.sqrt(2) * math.sqrt(3 / head_in)
        weight = np.random.rand(head_in, 10) * 2 * weight_bound - weight_bound
        bias_bound = math.sqrt(2) * math.sqrt(3 / 10)
        bias = np.random.rand(10, 1) * 2 * bias_bound - bias_bound
        return embedding.astype(np.float32), weight.astype(np.float32), bias.astype(np.float32)

    np.random.seed(1)
    model = make()
    np.random.seed(1)
    embedding, weight, bias = replay()
    # float32 rounding: NumPy scales the float64 draws, NDArray scales after the cast
    for got, expected in (
        (model.embedding.weight, embedding),
        (model.linear.weight, weight),
        (model.linear.bias, bias.reshape(1, 10)),
    ):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_language_model_rejects_unknown_seq_model():
    with pytest.raises(ValueError, match=r"seq_model must be one of .*got 'gru'"):
        LanguageModel(4, 10, 6, 1, "gru")


# ----- the PTB loops ---------------------------------------------------------------------------


def _reference_epoch(model, data, seq_len, carry):
    """Token-weighted loss and accuracy with the state carried (or reset) between chunks."""
    model.eval()
    h, loss_sum, correct, tokens = None, 0.0, 0, 0
    for i in range(0, data.shape[0] - 1, seq_len):
        X, y = get_batch(data, i, seq_len)
        out, h = model(X, h if carry else None)
        logits, labels = out.numpy().astype(np.float64), y.numpy().astype(int)
        peak = logits.max(axis=1, keepdims=True)
        logsumexp = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
        loss_sum += (logsumexp - logits[np.arange(len(labels)), labels]).sum()
        correct += (logits.argmax(axis=1) == labels).sum()
        tokens += len(labels)
    return correct / tokens, loss_sum / tokens


@pytest.mark.parametrize("seq_model", ["rnn", "lstm"])
def test_epoch_general_ptb_carries_state_and_weights_by_tokens(seq_model):
    np.random.seed(0)
    model = LanguageModel(5, 12, 7, 2, seq_model)
    data = batchify(list(np.random.randint(0, 12, 95)), 3)  # 31 rows: chunks of 4 and a 2
    acc, loss = epoch_general_ptb(data, model, seq_len=4)
    ref_acc, ref_loss = _reference_epoch(model, data, 4, carry=True)
    assert acc == pytest.approx(ref_acc) and loss == pytest.approx(ref_loss, rel=1e-5)
    _, reset_loss = _reference_epoch(model, data, 4, carry=False)
    assert abs(reset_loss - loss) > 1e-4  # the carried state matters: a reset is detectable
    assert not model.training


def test_train_ptb_lowers_the_loss_and_evaluate_changes_nothing():
    np.random.seed(0)
    model = LanguageModel(6, 8, 10, 1, "lstm")
    stream = [k % 8 for k in range(200)]  # 0 1 … 7 0 1 …: perfectly predictable
    data = batchify(stream, 4)
    before = evaluate_ptb(model, data, seq_len=10)[1]
    weights = [p.numpy().copy() for p in model.parameters()]
    assert evaluate_ptb(model, data, seq_len=10)[1] == pytest.approx(before)
    for p, w in zip(model.parameters(), weights):
        np.testing.assert_array_equal(p.numpy(), w)
    acc, loss = train_ptb(
        model, data, seq_len=10, n_epochs=3, optimizer=ndl.optim.Adam, lr=0.01, clip=1.0
    )
    assert model.training
    after_acc, after = evaluate_ptb(model, data, seq_len=10)
    assert after < before * 0.8 and after_acc > 0.3


def test_ptb_loops_start_from_seed_four():
    model = LanguageModel(3, 5, 4, 1, "rnn")
    data = batchify([0, 1, 2, 3, 4] * 4, 2)
    evaluate_ptb(model, data, seq_len=3)
    after_eval = np.random.rand()
    np.random.seed(4)
    assert after_eval == np.random.rand()  # seeded with 4, then nothing drawn in eval mode
