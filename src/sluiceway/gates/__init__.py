"""The static review of a spec (`sluice check`) and the document rendered from it (`sluice doc`)."""
