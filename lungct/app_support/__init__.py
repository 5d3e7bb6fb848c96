"""The Streamlit app's logic, kept out of the pages so it can be tested without Streamlit.

- ``catalog``: which models exist, their cards, test predictions and versions;
- ``case``: per-slice results of an upload, the case verdict and the CSV;
- ``report``: the self-contained HTML case report (no patient data);
- ``comparison``: model comparison tables, bootstrap CIs, ROC and reliability data;
- ``charts``: plotly figures for all of the above;
- ``experiments``: MLflow run queries;
- ``reference``: the paper's published figures, the dataset credit, the disclaimer;
- ``cache``: the ``st.cache_resource`` / ``st.cache_data`` loaders (the one Streamlit module).
"""
