"""Direct training of spiking networks (for comparison with conversion): trainable neurons,
surrogate gradients, input encodings and spiking transformers, unrolled over T steps."""
from snnconvert.direct.config import DirectConfig
from snnconvert.direct.encoding import ENCODERS, ChannelReduction, Encoder, events_to_frames, make_encoder
from snnconvert.direct.models import SpikingClassifier, Spikformer, SpikingViT
from snnconvert.direct.neurons import NODES, IFNode, KLIFNode, LIFNode, PLIFNode, SpikingNode, make_node
from snnconvert.direct.surrogate import SURROGATES, Surrogate, surrogate

__all__ = ["DirectConfig", "ENCODERS", "ChannelReduction", "Encoder", "events_to_frames", "make_encoder",
           "SpikingClassifier",
           "Spikformer", "SpikingViT", "NODES", "IFNode", "LIFNode", "PLIFNode", "KLIFNode", "SpikingNode",
           "make_node", "SURROGATES", "Surrogate", "surrogate"]
