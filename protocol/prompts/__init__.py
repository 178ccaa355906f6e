"""Prompt search: the genetic search (ga), fitness scorers (fitness), the search tasks
(search) and the redundant evaluation of prompts on peers (evaluation).

May import :mod:`protocol.wire` only.
"""
