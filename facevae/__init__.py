"""placeholder; see backend.py"""
