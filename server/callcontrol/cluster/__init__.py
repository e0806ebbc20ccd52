"""Cluster mode: several gateway replicas sharing one Redis (DESIGN.md, "Growing past one machine").

Off unless ``cluster.redis_url`` is set; then ``node.ClusterNode`` registers the
replica, keeps the session directory and routes requests for calls held elsewhere.
"""
