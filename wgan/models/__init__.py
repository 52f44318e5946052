"""The critic and the generator: the eager models (:mod:`wgan.models.eager`) and the fused ones with
Triton epilogues (:mod:`wgan.models.fused_critic`, :mod:`wgan.models.fused_generator`). Only what
trains imports the fused ones, so reading a run folder never loads Triton."""
