"""The canonical SQL (MANIFEST gives the load order), shipped as the package data `lowcap_learning.sql`."""
