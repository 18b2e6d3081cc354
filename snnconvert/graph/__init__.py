"""The static view of a model: a torch.fx graph, the role of every op in it, and which values are
spikes. Conversion, energy accounting and export all work on this view."""
