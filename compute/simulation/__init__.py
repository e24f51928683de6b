"""Stress simulation: block bootstrap, HMM fit, Markov regime generator, shocks, counter PRNG and
the path kernel."""
