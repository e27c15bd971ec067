"""The seasonal forecast: model, fit, calendar, I/O, backtest, provider, planning, CLI."""
