"""The senone DNN: utterance log posteriors over Kaldi-spliced frames."""

import numpy as np
import torch

from asrkd.features import FeatureReader, splice
from asrkd.nnet.model import SenoneDnn


def test_dnn_log_posteriors(yesno):
    torch.manual_seed(0)
    reader = FeatureReader(yesno / "train_yesno")
    feats = reader[reader.keys()[0]]
    net = SenoneDnn(feats.shape[1], num_senones=11, hidden=32, layers=2, left=20, right=5).eval()
    spliced = torch.from_numpy(splice(feats, 20, 5))
    assert spliced.shape == (len(feats), 26 * 40)
    logp = net.log_posteriors(feats, chunk=100)  # chunked forward: same as one pass
    assert logp.shape == (len(feats), 11) and logp.dtype == np.float32
    np.testing.assert_allclose(np.exp(logp).sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(logp, torch.log_softmax(net(spliced), -1).detach().numpy(), atol=1e-5)
    assert net.num_params() == 26 * 40 * 32 + 32 + 32 * 32 + 32 + 32 * 11 + 11
