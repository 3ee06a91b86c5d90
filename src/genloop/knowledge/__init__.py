"""Knowledge graphs in memory: entities and facts, linking a text to them, retrieving an
entity's neighbourhood, and checking the claims a text makes against the graph.

Rank 5 (beside hub and safety): imports the store, data and below; a loaded encoder comes in as a
callable from the generation layer.
"""

from genloop.knowledge.graph import Graph, Link, Triple, load_graph, read_graph, retrieve

__all__ = ["Graph", "Link", "Triple", "load_graph", "read_graph", "retrieve"]
