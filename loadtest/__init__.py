"""Load-testing client for the translation service: closed and open loop, reports and plots."""
