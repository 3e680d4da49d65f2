"""Graphs and Metattack (Zügner & Günnemann, ICLR 2019): poisoning node classification by
meta-gradient edge flips, behind `metazoo attack`.

Modules: `graphs` (the container, components, splits), `planetoid` (Cora/Citeseer/Pubmed files,
read without unpickling code), `generators` (contextual SBM, karate club), `gcn` (Kipf & Welling's
two-layer GCN on explicit weights), `metagrad` (exact and approximate meta-gradients),
`constraints` (no singletons, Nettack's degree test), `metattack` (greedy flips, random flips),
`config` and `run` (the command). Nothing heavy is imported here.
"""
