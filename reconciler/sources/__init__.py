"""Where desired state comes from: committed git trees.

The only package allowed to import pygit2, so the rest of the pipeline sees
repositories through the `reconciler.tree.Tree` interface.
"""
