"""The shared kernel: what every layer may import (domain errors, settings, time format,
keyset cursors, id parsing, stopping background tasks). It imports nothing of api, realtime,
server or storage."""
