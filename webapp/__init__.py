"""Steerlab's Django project: settings, URL routing and the apps."""
