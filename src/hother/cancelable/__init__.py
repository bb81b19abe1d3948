"""hother.cancelable: async cancellation for asyncio, anyio and trio (placeholder during build-up)."""
